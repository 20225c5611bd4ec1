"""Hydra override lines and flat parameter names: the one override parser."""

from __future__ import annotations

from typing import Any


def parse_override(line: str) -> tuple[str, str | None]:
    """``"+a.b=0.5"`` -> ``("a.b", "0.5")``; ``~key`` or a line without ``=``: ``("key", None)``."""
    key, sep, value = str(line).partition("=")
    deletion = key.startswith("~")
    key = key.lstrip("+~")
    return key, (value if sep and not deletion else None)


def quote(value: str) -> str:
    """``value`` quoted for Hydra's override parser."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def override_dict(lines: list[str]) -> dict[str, str]:
    """The overrides that set a value, by key, but Hydra's own (``hydra.*``)."""
    parsed = map(parse_override, lines)
    return {k: v for k, v in parsed if v is not None and not k.startswith(("hydra.", "hydra/"))}


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 0.5}}`` -> ``{"a.b": 0.5}``; an empty mapping stays one value."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
