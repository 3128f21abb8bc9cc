"""Pieces shared by the command modules: config option, output folders, bench output."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
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


def prepare_out_dir(out: str | Path, force: bool) -> Path:
    """Create ``out``; refuse a non-empty folder unless ``force`` (then it is emptied)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise UsageError(f"--out {out} is not empty; choose another folder or pass --force to overwrite it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


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


def progress(**kwargs: Any):
    """A tqdm progress bar on stderr (silent when stderr is not a terminal and FMRIFACE_QUIET is set)."""
    import os

    from tqdm import tqdm

    kwargs.setdefault("file", sys.stderr)
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("disable", os.environ.get("FMRIFACE_QUIET") == "1")
    return tqdm(**kwargs)
