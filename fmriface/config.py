"""Typed configuration: TOML files loaded into frozen dataclasses.

Every command keeps its options in one frozen dataclass. Values come, in increasing priority, from the
dataclass defaults, a TOML file (``--config``) and command-line overrides. An unknown key or a value of the
wrong type is a :class:`ConfigError` that names the key and the file.

Examples
--------
>>> @dataclasses.dataclass(frozen=True)
... class Cfg:
...     n: int = 3
>>> load_config(Cfg, None, {"n": 5}).n
5
"""

from __future__ import annotations

import dataclasses
import math
import os
import stat
import sys
import types
import typing
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

T = TypeVar("T")

__all__ = [
    "ConfigError",
    "load_config",
    "config_to_dict",
    "config_hash",
    "CONFIG_DIR",
    "preset_path",
    "preset_or_file",
    "resolve_config",
]


def _preset_dir() -> Path:
    """Where the presets are: package data ``fmriface/presets`` in an installed wheel (``setup.py`` copies
    ``configs/`` there), else the checkout's ``configs/`` (a source tree or an editable install)."""
    packaged = resources.files("fmriface").joinpath("presets")
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parent.parent / "configs"


#: The folder of the TOML presets shipped with the project.
CONFIG_DIR = _preset_dir()


class ConfigError(ValueError):
    """A configuration file or override that cannot be used; the message names the key and the source."""


def preset_or_file(name: str) -> Path:
    """A shipped preset by name, or a TOML file by path (a name ending in ``.toml``: a variant to try)."""
    if name.endswith(".toml"):
        path = Path(name).expanduser()
        if not path.is_file():
            raise ConfigError(f"preset file {path} does not exist")
        return path
    return preset_path(name)


def preset_path(name: str) -> Path:
    """Path of a shipped preset, e.g. ``preset_path("simulate-tiny")`` -> ``configs/simulate-tiny.toml``."""
    path = CONFIG_DIR / f"{name}.toml"
    if not path.is_file():
        known = sorted(p.stem for p in CONFIG_DIR.glob("*.toml"))
        raise ConfigError(f"no preset named {name!r} in {CONFIG_DIR}; known presets: {', '.join(known)}")
    return path


def resolve_config(value: str | Path | None, prefix: str = "") -> Path | None:
    """A ``--config`` value as a file: a path with a suffix or one that exists is taken as given (a missing file
    is reported by :func:`load_config`); anything else names a shipped preset, ``NAME`` or ``PREFIX-NAME``
    (``--config demo`` of ``display`` is ``display-demo``). Every command resolves ``--config`` here."""
    if value is None:
        return None
    path = Path(value)
    if path.suffix or path.exists():
        return path
    name = str(value)
    if prefix and not name.startswith(f"{prefix}-") and not (CONFIG_DIR / f"{name}.toml").is_file():
        name = f"{prefix}-{name}"
    return preset_path(name)


#: A config file larger than this is not a config file (a mistyped path to a data file).
MAX_CONFIG_BYTES = 1 << 20


def _read_toml(path: Path) -> dict[str, Any]:
    """A TOML file's tables; a folder, a FIFO or device (never opened: it would block), an oversized file, text
    that is not UTF-8 or not TOML are each a ConfigError naming the file."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"config file {path} is a folder, not a TOML file")
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"config file {path} is not a regular file (a FIFO, socket or device); not opened")
    if st.st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {path} has {st.st_size} bytes: too large for a config (a data file?)")
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.start}): not a TOML file") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def _check_value(value: Any, hint: Any, key: str, source: str) -> Any:
    """Return ``value`` converted to ``hint`` where that is lossless, or raise ConfigError."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_value(value, arg, key, source)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{source}: key {key!r} has value {value!r}, expected {_name(hint)}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{source}: key {key!r} is {value!r}, expected one of {list(args)}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: key {key!r} has value {value!r}, expected a list ({_name(hint)})")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{source}: key {key!r} needs {len(args)} values, got {len(value)}")
            items = [_check_value(v, a, f"{key}[{i}]", source) for i, (v, a) in enumerate(zip(value, args))]
        else:
            inner = args[0] if args else Any
            items = [_check_value(v, inner, f"{key}[{i}]", source) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: key {key!r} has value {value!r}, expected a table")
        return dict(value)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: key {key!r} must be a table [{key}]")
        return _build(hint, value, source, prefix=f"{key}.")
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: key {key!r} has value {value!r}, expected true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: key {key!r} has value {value!r}, expected an integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{source}: key {key!r} has value {value!r}, expected a number")
        if not math.isfinite(float(value)):
            raise ConfigError(f"{source}: key {key!r} is {value!r}, expected a finite number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{source}: key {key!r} has value {value!r}, expected a string")
        return value
    if hint is Path:
        if not isinstance(value, (str, Path)):
            raise ConfigError(f"{source}: key {key!r} has value {value!r}, expected a path")
        return Path(value)
    raise ConfigError(f"{source}: key {key!r} has an unsupported type {hint!r}")  # pragma: no cover


def _name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _build(cls: type[T], values: dict[str, Any], source: str, prefix: str = "") -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(
            f"{source}: unknown key{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(repr(prefix + k) for k in unknown)}; known keys: {', '.join(sorted(fields))}"
        )
    kwargs = {k: _check_value(v, hints[k], prefix + k, source) for k, v in values.items()}
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return obj


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def load_config(cls: type[T], path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> T:
    """Build ``cls`` from its defaults, an optional TOML file and command-line overrides.

    Parameters
    ----------
    cls : dataclass type
        The frozen dataclass of the command's options. Its ``__post_init__`` may raise ``ValueError`` for
        values that are well typed but out of range; the message is reported with the file name.
    path : path, optional
        A TOML file. Nested tables map to nested dataclasses.
    overrides : dict, optional
        Values from the command line; ``None`` values are ignored (option not given). Dotted keys
        (``"motion.max_mm"``) address nested tables.

    Raises
    ------
    ConfigError
        Unknown key, wrong type or invalid value, naming the key and the file.
    """
    values: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        values = _read_toml(path)
        source = str(path)
    if overrides:
        nested: dict[str, Any] = {}
        for key, val in overrides.items():
            if val is None:
                continue
            node = nested
            parts = key.split(".")
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = val
        values = _merge(values, nested)
        if nested:
            source = f"{source} + command line" if path is not None else "command line"
    return _build(cls, values, source)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON/TOML-friendly dict of a config dataclass (paths as strings, tuples as lists)."""

    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v

    return conv(cfg)


def config_hash(cfg: Any, *extra: Any) -> str:
    """A short, stable hash of a config (and any extra JSON-able values), used to key reusable outputs."""
    import hashlib
    import json

    blob = json.dumps([config_to_dict(cfg), *extra], sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
