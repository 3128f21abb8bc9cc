"""Pieces shared by the command modules: config option, output folders, bench output."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


class UsageError(Exception):
    """A bad argument or input named in one line (printed without a traceback by the front door)."""

    user_error = True


def parser(prog: str, doc: str | None) -> argparse.ArgumentParser:
    """An ArgumentParser whose description is the command module's docstring."""
    return argparse.ArgumentParser(
        prog=f"fmriface {prog}",
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def prepare_out_dir(out: str | Path, force: bool, inputs: Sequence[str | Path | None] = ()) -> Path:
    """Create ``out``; refuse a non-empty folder unless ``force`` (then it is emptied).

    ``inputs`` are the command's input files and folders (None is skipped): ``--force`` never empties a folder
    that is one of them or holds one (``export --vaegan V --out V`` would delete the model it exports). An --out
    inside an input folder (``fit --bids B --out B/derivatives/fit``) is fine: emptying it deletes no input.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise UsageError(f"--out {out} is not empty; choose another folder or pass --force to overwrite it")
        target = out.resolve()
        for given in inputs:
            if given is None or str(given) == "":
                continue
            src = Path(given).resolve()
            if src == target or target in src.parents:
                where = "that folder" if src == target else "inside it"
                raise UsageError(f"--force would delete {out}, and the input {given} is {where}: choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def check_addresses(**addresses: str | None) -> None:
    """Each ZeroMQ address given (``--sub=...``: option name -> value; None or '' skipped) is one this project can
    use (:func:`service.protocol.check_address`), else a UsageError naming the option."""
    from service.protocol import ProtocolError, check_address

    for name, value in addresses.items():
        if value:
            try:
                check_address(value, f"--{name.replace('_', '-')}")
            except ProtocolError as exc:
                raise UsageError(str(exc)) from None


def emit(result: dict[str, Any], as_json: bool) -> None:
    """Print a bench or command result: one JSON object on stdout, or an indented summary."""
    if as_json:
        print(json.dumps(result, default=_jsonable))
    else:
        print(json.dumps(result, indent=2, default=_jsonable))
    sys.stdout.flush()


def _jsonable(v: Any) -> Any:
    try:
        import numpy as np

        if isinstance(v, np.generic):
            return v.item()
        if isinstance(v, np.ndarray):
            return v.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(v, Path):
        return str(v)
    raise TypeError(f"cannot write {type(v).__name__} as JSON")


def free_address() -> str:
    """A free ``tcp://127.0.0.1:PORT`` (for the demo, benchmarks and tests that start a service)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(str(v))  # a JSON string is a valid TOML basic string


def _toml_lines(values: dict[str, Any], prefix: str = "") -> list[str]:
    flat = [f"{k} = {_toml_value(v)}" for k, v in values.items() if v is not None and not isinstance(v, dict)]
    for k, v in values.items():
        if isinstance(v, dict):
            flat += ["", f"[{prefix}{k}]", *_toml_lines(v, f"{prefix}{k}.")]
    return flat


def write_toml(path: str | Path, values: dict[str, Any]) -> Path:
    """Write ``values`` (scalars, lists and nested tables; None values left out) as a TOML config file."""
    path = Path(path)
    path.write_text("\n".join(_toml_lines(values)) + "\n")
    return path


def progress(**kwargs: Any):
    """A tqdm progress bar on stderr (off with FMRIFACE_QUIET=1; into a log file it updates every 10 s, not
    several times a second)."""
    import os

    from tqdm import tqdm

    kwargs.setdefault("file", sys.stderr)
    kwargs.setdefault("dynamic_ncols", True)
    if not getattr(kwargs["file"], "isatty", lambda: False)():
        kwargs.setdefault("mininterval", 10.0)
    kwargs.setdefault("disable", os.environ.get("FMRIFACE_QUIET") == "1")
    return tqdm(**kwargs)
