"""Build an entry point's options dataclass from a plain mapping (a TOML table), and describe one.

Each entry point (finetune, distill, prune, quantize, bench) takes one dataclass that holds its
defaults; the CLI builds it from flags, the pipeline from TOML through `build`. Keys are the
dataclass's field names (`warmup-epochs` is read as `warmup_epochs`), or the field names of a
nested options dataclass (`epochs` of `RunRequest` is `train.epochs`; `epochs` of
`QuantizeOptions` is `qat.epochs`), so neither side re-spells the other's flags.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from defectopt.errors import DefectoptError

# An option added after study DBs existed is declared `added_later(default, "when", legacy)`: while
# it holds `legacy` (the behaviour those DBs' steps computed; the default unless the default
# changed with it) it stays out of step keys (`steps.step_key`), so those DBs still resume instead
# of re-running every step of that kind, and a step with any other value gets a key of its own.
KEY_SINCE = "key_since"
KEY_LEGACY = "key_legacy"


def added_later(default: Any, since: str, legacy: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with this default that step keys omit while it holds `legacy` (default: the default)."""
    return dataclasses.field(default=default, metadata={KEY_SINCE: since,
                                                        KEY_LEGACY: default if legacy is dataclasses.MISSING else legacy})


def at_legacy_values(options: Any) -> list[str]:
    """Names of the fields of `options` declared with `added_later` that hold their legacy value."""
    return [f.name for f in dataclasses.fields(options)
            if KEY_SINCE in f.metadata and getattr(options, f.name) == f.metadata[KEY_LEGACY]]


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def _nested(cls: type) -> dict[str, type]:
    """Fields of `cls` whose default is itself an options dataclass."""
    out = {}
    for f in dataclasses.fields(cls):
        value = _default(f)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            out[f.name] = type(value)
    return out


def known_keys(cls: type) -> list[str]:
    nested = _nested(cls)
    keys = [f.name for f in dataclasses.fields(cls) if f.name not in nested]
    for sub in nested.values():
        keys += [k for k in known_keys(sub) if k not in keys]
    return keys


def build(cls: type, values: dict[str, Any], where: str = "options") -> Any:
    """`cls(**values)`, routing each key to `cls` or to the one nested options dataclass that has it.
    A key a nested dataclass shares with `cls` goes to `cls`; an unknown or ambiguous key is a
    one-line error naming the known ones."""
    top = {f.name for f in dataclasses.fields(cls)}
    nested = _nested(cls)
    direct: dict[str, Any] = {}
    inner: dict[str, dict[str, Any]] = {name: {} for name in nested}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name in nested and isinstance(value, dict):
            inner[name].update(value)
        elif name in top and name not in nested:
            direct[name] = value
        else:
            owners = [n for n, sub in nested.items() if name in {f.name for f in dataclasses.fields(sub)}]
            if len(owners) != 1:
                raise DefectoptError(f"{where}: unknown option '{key}'; known: {', '.join(known_keys(cls))}")
            inner[owners[0]][name] = value
    for name, sub in nested.items():
        if inner[name]:
            direct[name] = build(sub, inner[name], where)
    try:
        return cls(**direct)
    except TypeError as exc:
        raise DefectoptError(f"{where}: {exc}") from None


def describe(options: Any) -> str:
    """`key=value` for every field that differs from its default (nested ones flattened)."""
    parts = []
    for f in dataclasses.fields(options):
        value, default = getattr(options, f.name), _default(f)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            inner = describe(value)
            if inner:
                parts.append(inner)
        elif value != default:
            parts.append(f"{f.name}={','.join(map(str, value)) if isinstance(value, (list, tuple)) else value}")
    return " ".join(parts)
