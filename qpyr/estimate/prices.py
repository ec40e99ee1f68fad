"""Typed loader for qpyr storage price tables (``prices.json``).

A price table lists, per provider and storage class, the list prices used by
``qpyr estimate``.  The file format is defined by ``prices.schema.json`` (JSON
Schema draft 2020-12) and documented in ``spec/prices.md``.

Units: money in USD; GB = 10**9 bytes; request prices per 1,000 requests.
"""

from __future__ import annotations

import difflib
import json
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date
from importlib import resources
from typing import Any

import jsonschema

from qpyr.errors import PriceTableError, UnknownStorageClassError

__all__ = [
    "PriceTable",
    "PriceTableError",
    "Provider",
    "StorageClass",
    "UnknownStorageClassError",
    "load_prices",
    "parse_prices",
    "shipped_prices_text",
]

FORMAT = "qpyr-prices"
VERSION = 1
_SHIPPED_LABEL = "<shipped qpyr/estimate/prices.json>"

# Numeric fields of a storage class, in file order.
_NUMERIC_FIELDS = (
    "storage_per_gb_month",
    "write_per_1k",
    "read_per_1k",
    "retrieval_per_gb",
    "egress_per_gb",
    "egress_free_gb_per_month",
    "egress_free_stored_multiple",
    "min_billable_object_bytes",
    "overhead_bytes_per_object",
    "overhead_standard_bytes_per_object",
    "overhead_standard_per_gb_month",
    "min_storage_days",
)


@dataclass(frozen=True)
class StorageClass:
    """Prices of one storage class of one provider.

    Money is USD; GB is 10**9 bytes; request prices are per 1,000 requests.
    """

    provider: str
    name: str
    storage_per_gb_month: float  # USD per GB stored per month
    write_per_1k: float  # USD per 1,000 PUT / Class A requests
    read_per_1k: float  # USD per 1,000 GET / Class B / restore requests
    retrieval_per_gb: float  # USD per GB read back (IA / archive classes)
    egress_per_gb: float  # USD per GB sent to the internet beyond the allowance
    egress_free_gb_per_month: float  # free egress, GB per month
    egress_free_stored_multiple: float  # extra free egress = multiple x GB stored
    min_billable_object_bytes: int  # smaller objects are billed as this size
    overhead_bytes_per_object: int  # per-object metadata at this class's rate
    overhead_standard_bytes_per_object: int  # per-object metadata at the rate below
    overhead_standard_per_gb_month: float  # USD per GB-month for the above
    min_storage_days: int  # minimum billed storage duration, days
    as_of: str  # YYYY-MM or YYYY-MM-DD
    source: str  # document every number above comes from
    notes: str | None = None

    @property
    def key(self) -> str:
        """``provider:class``, the name accepted by :meth:`PriceTable.get`."""
        return f"{self.provider}:{self.name}"

    def to_dict(self) -> dict[str, Any]:
        """The class as it appears in ``prices.json`` (without provider/name)."""
        out: dict[str, Any] = {f: getattr(self, f) for f in _NUMERIC_FIELDS}
        out["as_of"] = self.as_of
        out["source"] = self.source
        if self.notes is not None:
            out["notes"] = self.notes
        return out


@dataclass(frozen=True)
class Provider:
    """A storage provider (one region) and its storage classes."""

    key: str
    display_name: str
    region: str
    classes: tuple[StorageClass, ...]
    notes: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"display_name": self.display_name, "region": self.region}
        if self.notes is not None:
            out["notes"] = self.notes
        out["classes"] = {c.name: c.to_dict() for c in self.classes}
        return out


@dataclass(frozen=True)
class PriceTable:
    """A validated price table. ``origin`` (the file it came from) is not compared."""

    version: int
    as_of: str
    currency: str
    providers: tuple[Provider, ...]
    notes: str | None = None
    origin: str = field(default=_SHIPPED_LABEL, compare=False)

    def keys(self) -> list[str]:
        """All ``provider:class`` names, in file order."""
        return [c.key for c in self]

    def __iter__(self) -> Iterator[StorageClass]:
        for p in self.providers:
            yield from p.classes

    def get(self, key: str) -> StorageClass:
        """Look up ``"provider:class"`` (e.g. ``"aws-s3:standard-ia"``).

        Raises UnknownStorageClassError listing the known names.
        """
        wanted = key.strip().lower()
        for c in self:
            if c.key == wanted:
                return c
        known = self.keys()
        hint = ""
        close = difflib.get_close_matches(wanted, known, n=1)
        if close:
            hint = f" Did you mean {close[0]!r}?"
        form = "" if ":" in wanted else " Names have the form provider:class."
        raise UnknownStorageClassError(
            f"unknown storage class {key!r} in {self.origin}.{form}{hint} "
            f"Known: {', '.join(known)}"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form; ``load_prices`` of its dump gives an equal table."""
        out: dict[str, Any] = {
            "format": FORMAT,
            "version": self.version,
            "as_of": self.as_of,
            "currency": self.currency,
        }
        if self.notes is not None:
            out["notes"] = self.notes
        out["providers"] = {p.key: p.to_dict() for p in self.providers}
        return out


# --------------------------------------------------------------------------- loading


class _NonFinite(str):
    """Stands in for NaN/Infinity/overflowing numbers so the schema rejects them."""


def _parse_float(text: str) -> float | _NonFinite:
    value = float(text)
    return value if math.isfinite(value) else _NonFinite(text)


def _schema() -> dict[str, Any]:
    text = resources.files("qpyr.estimate").joinpath("prices.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def shipped_prices_text() -> str:
    """The text of the shipped ``prices.json`` (e.g. to write out and edit for --prices)."""
    return resources.files("qpyr.estimate").joinpath("prices.json").read_text("utf-8")


def load_prices(path: str | os.PathLike[str] | None = None) -> PriceTable:
    """Load and validate a price table.

    ``path=None`` loads the table shipped with qpyr.  Any problem (missing file,
    bad JSON, schema violation) raises PriceTableError naming the file and, for
    schema problems, the dotted path of the offending field.
    """
    if path is None:
        origin = _SHIPPED_LABEL
        try:
            text = shipped_prices_text()
        except OSError as exc:  # pragma: no cover - broken install
            raise PriceTableError(f"{origin}: cannot read: {exc}") from exc
    else:
        origin = os.fspath(path)
        try:
            with open(origin, encoding="utf-8") as fh:
                text = fh.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise PriceTableError(f"{origin}: cannot read price table: {exc}") from exc
    try:
        data = json.loads(text, parse_float=_parse_float, parse_constant=_NonFinite)
    except json.JSONDecodeError as exc:
        raise PriceTableError(
            f"{origin}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from exc
    return parse_prices(data, origin=origin)


def parse_prices(data: Any, *, origin: str = "<price table>") -> PriceTable:
    """Validate already-decoded JSON ``data`` and build a PriceTable."""
    validator = jsonschema.Draft202012Validator(_schema())
    errors = sorted(
        validator.iter_errors(data),
        key=lambda e: ([str(p) for p in e.absolute_path], str(e.validator)),
    )
    if errors:
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise PriceTableError(f"{origin}: {_describe(errors[0])}{more}")
    for pkey, pdata in data["providers"].items():
        for ckey, cdata in pdata["classes"].items():
            _check_date(cdata["as_of"], f"providers.{pkey}.classes.{ckey}.as_of", origin)
    _check_date(data["as_of"], "as_of", origin)
    providers = tuple(
        Provider(
            key=pkey,
            display_name=pdata["display_name"],
            region=pdata["region"],
            notes=pdata.get("notes"),
            classes=tuple(_storage_class(pkey, ckey, c) for ckey, c in pdata["classes"].items()),
        )
        for pkey, pdata in data["providers"].items()
    )
    return PriceTable(
        version=int(data["version"]),
        as_of=data["as_of"],
        currency=data["currency"],
        providers=providers,
        notes=data.get("notes"),
        origin=origin,
    )


def _storage_class(provider: str, name: str, c: Mapping[str, Any]) -> StorageClass:
    return StorageClass(
        provider=provider,
        name=name,
        storage_per_gb_month=float(c["storage_per_gb_month"]),
        write_per_1k=float(c["write_per_1k"]),
        read_per_1k=float(c["read_per_1k"]),
        retrieval_per_gb=float(c["retrieval_per_gb"]),
        egress_per_gb=float(c["egress_per_gb"]),
        egress_free_gb_per_month=float(c["egress_free_gb_per_month"]),
        egress_free_stored_multiple=float(c["egress_free_stored_multiple"]),
        min_billable_object_bytes=int(c["min_billable_object_bytes"]),
        overhead_bytes_per_object=int(c["overhead_bytes_per_object"]),
        overhead_standard_bytes_per_object=int(c["overhead_standard_bytes_per_object"]),
        overhead_standard_per_gb_month=float(c["overhead_standard_per_gb_month"]),
        min_storage_days=int(c["min_storage_days"]),
        as_of=c["as_of"],
        source=c["source"],
        notes=c.get("notes"),
    )


def _check_date(value: str, where: str, origin: str) -> None:
    text = value if len(value) == 10 else value + "-01"
    try:
        date.fromisoformat(text)
    except ValueError:
        raise PriceTableError(f"{origin}: {where}: not a real date: {value!r}") from None


def _got(instance: Any) -> str:
    if isinstance(instance, _NonFinite):
        return f"{instance!s} (non-finite numbers are not allowed)"
    text = json.dumps(instance)
    return text if len(text) <= 60 else text[:57] + "..."


_TYPE_WORDS = {
    "object": "an object",
    "string": "a string",
    "number": "a number",
    "integer": "an integer",
    "array": "an array",
    "boolean": "a boolean",
}


def _describe(err: jsonschema.ValidationError) -> str:
    """``dotted.path: what was expected, got what`` for one schema error."""
    path = [str(p) for p in err.absolute_path]
    schema = err.schema if isinstance(err.schema, Mapping) else {}
    kind = err.validator
    in_names = "propertyNames" in err.schema_path
    if in_names:
        where = ".".join(path) or "(top level)"
        return (
            f"{where}: invalid name {_got(err.instance)}: use lowercase letters, "
            f"digits and '-' (at most 64 characters)"
        )
    if kind == "required":
        missing = [k for k in err.validator_value if k not in err.instance]
        return f"{'.'.join(path + missing[:1])}: required field is missing"
    if kind == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        extra = sorted(k for k in err.instance if k not in allowed)
        return (
            f"{'.'.join(path + extra[:1])}: unknown field "
            f"(allowed here: {', '.join(allowed)})"
        )
    where = ".".join(path) or "(top level)"
    if kind in ("type", "minimum"):
        want = schema.get("type")
        if want in ("number", "integer") and schema.get("minimum") == 0:
            return f"{where}: expected a non-negative {want}, got {_got(err.instance)}"
        return f"{where}: expected {_TYPE_WORDS.get(str(want), str(want))}, got {_got(err.instance)}"
    if kind == "const":
        return f"{where}: expected {json.dumps(err.validator_value)}, got {_got(err.instance)}"
    if kind == "pattern" and path and path[-1] == "as_of":
        return f"{where}: expected a date YYYY-MM or YYYY-MM-DD, got {_got(err.instance)}"
    if kind == "minLength":
        return f"{where}: must not be empty"
    if kind == "minProperties":
        return f"{where}: must list at least one entry"
    return f"{where}: {err.message}"
