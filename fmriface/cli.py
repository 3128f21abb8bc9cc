"""The ``fmriface`` command: one subcommand per module in :mod:`fmriface.commands`.

Subcommands are discovered, not listed by hand: a module ``fmriface/commands/train_vaegan.py`` with a
``main(argv=None) -> int`` function is the command ``fmriface train-vaegan``, and the first line of its
docstring is its one-line help. Nothing is imported until a command runs, so ``fmriface --help`` is instant.
"""

from __future__ import annotations

import ast
import importlib
import os
import sys
from pathlib import Path

from fmriface import __version__
from service.policy import raise_errors

_COMMANDS_DIR = Path(__file__).resolve().parent / "commands"


def commands() -> dict[str, tuple[str, str]]:
    """Map each command name to (module name, one-line help), read without importing the modules."""
    found: dict[str, tuple[str, str]] = {}
    for path in sorted(_COMMANDS_DIR.glob("*.py")):
        if path.name.startswith("_"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        doc = ast.get_docstring(tree) or ""
        found[path.stem.replace("_", "-")] = (
            f"fmriface.commands.{path.stem}",
            doc.strip().splitlines()[0] if doc else "",
        )
    return found


def _usage(cmds: dict[str, tuple[str, str]]) -> str:
    width = max((len(n) for n in cmds), default=8)
    lines = [
        "usage: fmriface COMMAND [options]   (fmriface COMMAND --help for each command's options)",
        "",
        "Live reconstruction of seen and imagined faces from fMRI (VanRullen & Reddy 2019).",
        "",
        "commands:",
    ]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in cmds.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run ``fmriface COMMAND ...``; returns the process exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # OpenMP threads that spin while waiting steal the other core from a busy machine (a torch training step
    # took 8.6 s instead of 1.8 s on a loaded 2-core CPU); set here, once for every command (torchrun too, via
    # `-m fmriface`), before any of them imports torch.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    cmds = commands()
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage(cmds))
        return 0
    if argv[0] in ("-V", "--version"):
        print(f"fmriface {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in cmds:
        print(f"fmriface: unknown command {name!r}\n\n{_usage(cmds)}", file=sys.stderr)
        return 2
    module = importlib.import_module(cmds[name][0])
    try:
        return int(module.main(rest) or 0)
    except KeyboardInterrupt:
        print("fmriface: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the front door turns known errors into one clear line
        if raise_errors() or not _is_user_error(exc):
            raise
        print(f"fmriface {name}: error: {exc}", file=sys.stderr)
        return 1


def _is_user_error(exc: BaseException) -> bool:
    """Errors that describe bad input (a file, a key, a value) are printed as one line, not a traceback."""
    from fmriface.config import ConfigError

    return isinstance(exc, (ConfigError, FileNotFoundError, FileExistsError, NotADirectoryError)) or getattr(
        exc, "user_error", False
    )
