"""Errors raised by qpyr.

Every error qpyr raises on bad input is a :class:`QpyrError`. The specific subclasses also
subclass the builtin that fits (``ValueError``, ``FileNotFoundError`` ...) so callers that
catch builtins keep working. Messages name what was wrong and where, and say what to do.
"""

from __future__ import annotations

__all__ = [
    "QpyrError",
    "InputError",
    "InputNotFoundError",
    "PixelLimitError",
    "NonFiniteError",
    "RangeError",
    "PolicyError",
    "CodecError",
    "FormatError",
    "UnsupportedVersionError",
    "IncompleteStoreError",
    "StoreExistsError",
    "ChecksumError",
    "ItemNotFoundError",
    "StorageError",
    "PriceTableError",
    "QpyrWarning",
]


class QpyrError(Exception):
    """Base class of every error qpyr raises on bad input or a bad store."""


class InputError(QpyrError, ValueError):
    """An input image or array could not be used (unreadable, empty, wrong dtype ...)."""


class InputNotFoundError(InputError, FileNotFoundError):
    """An input path, glob or URL matched nothing."""


class PixelLimitError(InputError):
    """An input has more pixels than the configured limit (decompression-bomb guard)."""


class NonFiniteError(InputError):
    """A float input holds NaN or Inf and the chosen policy forbids them."""


class RangeError(QpyrError, ValueError):
    """A value lies outside a quantizer's chosen range and clamping was not asked for."""


class PolicyError(QpyrError, ValueError):
    """A policy spec string or policy parameter is invalid."""


class CodecError(QpyrError, ValueError):
    """A codec was misconfigured, or its encoded bytes are corrupt."""


class FormatError(QpyrError, ValueError):
    """A store's metadata is malformed or inconsistent with the qpyr format."""


class UnsupportedVersionError(FormatError):
    """A store was written with a format major version this reader does not know."""


class IncompleteStoreError(FormatError):
    """A store has no committed manifest: a pack did not finish (re-run it to complete it)."""


class StoreExistsError(QpyrError, FileExistsError):
    """The output store exists and overwriting was not asked for."""


class ChecksumError(QpyrError, ValueError):
    """Stored bytes do not match their crc32c checksum."""


class ItemNotFoundError(QpyrError, KeyError):
    """An item name or level that the store does not hold was asked for."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable.
        return str(self.args[0]) if self.args else ""


class StorageError(QpyrError, OSError):
    """The storage backend failed (missing bucket, bad credentials, unreachable endpoint)."""


class PriceTableError(QpyrError, ValueError):
    """A price table file is malformed; the message names the offending field."""


class UnknownStorageClassError(PriceTableError):
    """``PriceTable.get`` was asked for a provider:class the table does not list."""


class BudgetError(QpyrError, ValueError):
    """No level of an item fits the byte budget given to ``levels="auto"``."""


class CatalogChunkMissingError(FormatError):
    """A catalog chunk of the generation named by the root read is gone (maybe replaced by an
    append that committed in between; the reader reads the root again)."""


class _ParameterError(QpyrError, ValueError):
    def __init__(self, parameter: str, problem: str) -> None:
        super().__init__(f"{parameter}: {problem}")
        self.parameter = parameter


class EstimateInputError(_ParameterError):
    """An argument of :func:`~qpyr.estimate.estimate` / :func:`~qpyr.estimate.estimate_store` is
    invalid; ``parameter`` names it."""


class CostInputError(_ParameterError):
    """A cost input is negative, non-finite, of the wrong type or inconsistent.

    ``parameter`` names the offending input (e.g. ``"total_bytes"``).
    """



class QpyrWarning(UserWarning):
    """Something a user probably did not mean but that loses nothing (e.g. a quality floor for
    a level no packed image has). The CLI prints these as ``qpyr VERB: warning: ...``."""
