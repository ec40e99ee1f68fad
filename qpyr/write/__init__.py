"""The writer: shard-owning pack tasks, their journal and the commit that writes the manifest last.

:func:`qpyr.write.writer.run_pack` is the entry point; :func:`qpyr.write.writer.pack_task` is the
engine-agnostic task that one process, ``--workers N`` or a Dask cluster runs.
"""
