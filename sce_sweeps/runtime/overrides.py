"""Hydra override lines and flat parameter names: the one override parser."""

from __future__ import annotations

from typing import Any


def parse_override(line: str) -> tuple[str, str | None]:
    """``"+a.b=0.5"`` -> ``("a.b", "0.5")``; a deletion ``~key`` gives ``("key", None)``, as
    does a line without ``=``."""
    key, sep, value = str(line).partition("=")
    deletion = key.startswith("~")
    key = key.lstrip("+~")
    return key, (value if sep and not deletion else None)


def quote(value: str) -> str:
    """``value`` quoted for Hydra's override parser."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def override_dict(lines: list[str], hydra: bool = False) -> dict[str, str]:
    """The overrides that set a value, by key (``hydra.*`` keys only if ``hydra``)."""
    out = {}
    for line in lines:
        key, value = parse_override(line)
        if value is not None and (hydra or not key.startswith(("hydra.", "hydra/"))):
            out[key] = value
    return out


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 0.5}}`` -> ``{"a.b": 0.5}``; an empty mapping stays one value, lists stay
    lists."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
