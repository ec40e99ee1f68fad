"""A pack task's record heaps (format 2.0): one per level, written shard by shard.

Task ``t`` owns row ``t`` of every level's record array, so tasks never write the same object.
Its records of a level go back to back into that row; a shard object is written as soon as
the next record would not fit (a record never straddles two shards unless it is larger than a
shard: it then starts a shard and fills as many as it needs). So every shard of a task but its
last one per level holds at least ``shard_bytes`` minus one record.
"""

from __future__ import annotations

from typing import Any

from qpyr.errors import FormatError
from qpyr.format import heap
from qpyr.format.record import build_record
from qpyr.io.storage import ObjectStore
from qpyr.policies.encode import EncodedLevel

__all__ = ["LevelHeap", "record_of"]


def record_of(e: EncodedLevel) -> bytes:
    """The record of an encoded level: its parameters and its tiles in row-major order."""
    tiles = [data for _ty, _tx, data in sorted(e.chunks)]
    return build_record(tiles, e.params)


class LevelHeap:
    """Records of one level of one task: ``add`` places a record, shards are written when full."""

    def __init__(self, ostore: ObjectStore, level: int, task: int, shard_bytes: int, task_shards: int):
        self.os, self.level, self.task = ostore, level, task
        self.S, self.task_shards = shard_bytes, task_shards
        self.buf = bytearray()
        self.j = 0  # the shard ``buf`` fills
        #: ``[shard, used bytes, object bytes]`` of every shard written
        self.shards: list[list[int]] = []
        self.objects: dict[str, int] = {}

    def key(self, j: int) -> str:
        return f"levels/{self.level}/c/{self.task}/{j}"

    def add(self, record: bytes) -> int:
        """Place ``record``; returns its offset in the task's row."""
        n = len(record)
        if self.buf and len(self.buf) + n > self.S:
            self._flush()
        off = self.j * self.S + len(self.buf)
        if n <= self.S - len(self.buf):
            self.buf += record
        else:  # larger than a shard: whole shards, the rest starts the next one
            mv = memoryview(record)
            for a in range(0, n, self.S):
                self.buf += mv[a:a + self.S]
                if len(self.buf) == self.S:
                    self._flush()
        if len(self.buf) == self.S:
            self._flush()
        return off

    def _flush(self) -> None:
        if not self.buf:
            return
        if self.j >= self.task_shards:
            raise FormatError(f"task {self.task} filled all {self.task_shards} shards of level {self.level}; "
                              "use fewer items per task or larger shards.")
        obj = heap.encode_frame(self.buf, self.S)
        self.os.write(self.key(self.j), obj)
        self.objects[self.key(self.j)] = len(obj)
        self.shards.append([self.j, len(self.buf), len(obj)])
        self.j += 1
        self.buf = bytearray()

    def close(self) -> dict[str, Any]:
        """Write the last (partial) shard; the receipt entry of this level."""
        self._flush()
        return {"shards": self.shards}
