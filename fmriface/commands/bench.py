"""Run a benchmark: `fmriface bench NAME [--json]` (motion, service, decoder, intake, train, faces, ...).

Each benchmark lives in ``fmriface/benchmarks/NAME.py`` with ``add_arguments(parser)`` (optional) and
``run(args) -> dict``. With ``--json`` one JSON object is printed on stdout; progress goes to stderr.
"""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

from fmriface.common import emit, parser

_BENCH_DIR = Path(__file__).resolve().parent.parent / "benchmarks"


def benchmarks() -> dict[str, str]:
    """Map each benchmark name to its one-line description, read without importing."""
    out = {}
    for path in sorted(_BENCH_DIR.glob("*.py")):
        if path.name.startswith("_"):
            continue
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        out[path.stem] = doc.strip().splitlines()[0] if doc else ""
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark named by ``argv[0]`` with the rest as its options and print its result.

    Without a name (or with -h) it prints the list of benchmarks. Returns 2 for an unknown name, else 0.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    known = benchmarks()
    listing = "\n".join(f"  {k:<10} {v}" for k, v in known.items())
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: fmriface bench NAME [--json] [options]\n\n{__doc__}\nbenchmarks:\n{listing}")
        return 0
    name = argv[0]
    if name not in known:
        print(f"fmriface bench: unknown benchmark {name!r}\n\nbenchmarks:\n{listing}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"fmriface.benchmarks.{name}")
    p = parser(f"bench {name}", module.__doc__)
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    if hasattr(module, "add_arguments"):
        module.add_arguments(p)
    args = p.parse_args(argv[1:])
    args.argv = ["bench", *argv]  # how it was called: a benchmark that reruns itself (service --lsl) uses it
    result = module.run(args)
    emit(result, args.json)
    return 0
