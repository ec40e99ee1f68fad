"""The ``{"name": ..., "configuration": {...}}`` parsing every codec's ``from_dict`` shares."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from qpyr.errors import CodecError


def parse_config(d: Any, name: str, allowed: set[str] | Mapping[str, Any], *,
                 mapping: type = dict, null_configuration: bool = False) -> dict[str, Any]:
    """Validate a codec object and return its configuration (a new dict).

    ``d`` must be a ``mapping`` (``dict`` by default) named ``name`` with no field besides
    ``name`` and ``configuration``; the configuration must be a ``mapping`` with keys in
    ``allowed`` (a missing one is ``{}``, and so is ``null`` when ``null_configuration``).
    Every failure is a :class:`CodecError` naming the codec and the offending field or key.
    """
    m = cast(Mapping[str, Any], d) if isinstance(d, mapping) else None
    if m is None or m.get("name") != name:
        raise CodecError(f"Expected codec {name!r}. Got {d!r}.")
    unknown = set(m) - {"name", "configuration"}
    if unknown:
        raise CodecError(f"Unknown field(s) {sorted(unknown)} in codec {name!r}; expected 'name', 'configuration'.")
    conf: Any = m.get("configuration", {})
    if conf is None and null_configuration:
        conf = {}
    if not isinstance(conf, mapping):
        raise CodecError(f"Expected an object as {name!r} configuration. Got {conf!r}.")
    conf = cast(Mapping[str, Any], conf)
    bad = set(conf) - set(allowed)
    if bad:
        raise CodecError(
            f"Unknown configuration key(s) {sorted(bad)} for codec {name!r}; expected {sorted(allowed)}."
        )
    return dict(conf)
