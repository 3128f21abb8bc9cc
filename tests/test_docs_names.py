"""The rooms' tables in ``docs/architecture.md`` name each room's public names, and they are the room's ``__all__``.

Each row of a table with a "public names" column names a room (a subpackage or a top-level module) and its
backticked public names. Every name listed must be in the room's ``__all__`` (a ``PREFIX_*`` pattern must match
at least one; ``module.name`` is looked up in that module of the room), and every name of ``__all__`` must be
listed, unless the row ends with ``...``, the shorthand for "and more".
"""

from __future__ import annotations

import fnmatch
import importlib
import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"
_TICKS = re.compile(r"`([^`]+)`")


def room_rows(text: str) -> list[tuple[str, list[str], bool]]:
    """``(room path, listed names, ends with "...")`` for each row of the tables whose last column is "public names"."""
    rows: list[tuple[str, list[str], bool]] = []
    in_table = False
    for line in text.splitlines():
        if not line.startswith("|"):
            in_table = False
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[-1] == "public names":
            in_table = True
        elif in_table and not set(cells[0]) <= set("-: "):
            room = _TICKS.search(cells[0])
            if room is not None:
                rows.append((room.group(1), _TICKS.findall(cells[-1]), cells[-1].endswith("...")))
    return rows


def module_of(room: str) -> str:
    """``service/dicom/`` -> ``service.dicom``; ``offline/fit.py`` -> ``offline.fit``."""
    return room.strip("/").removesuffix(".py").replace("/", ".")


def check_room(room: str, listed: list[str], partial: bool) -> list[str]:
    """What is wrong with one row: names listed that the room does not offer, names it offers that are not listed."""
    module = importlib.import_module(module_of(room))
    public = list(getattr(module, "__all__", []))
    problems = []
    for name in listed:
        if "." in name:  # ``cli.main``: a module of the room and one of its names
            sub, attr = name.rsplit(".", 1)
            inner = importlib.import_module(f"{module.__name__}.{sub}")
            if attr not in getattr(inner, "__all__", dir(inner)):
                problems.append(f"`{name}` is not a public name of {inner.__name__}")
        elif "*" in name:
            if not fnmatch.filter(public, name):
                problems.append(f"`{name}` matches none of {module.__name__}.__all__")
        elif name not in public:
            problems.append(f"`{name}` is listed but not in {module.__name__}.__all__")
    if not partial and hasattr(module, "__all__"):
        plain = [n for n in listed if "." not in n]
        unlisted = [n for n in public if not any(fnmatch.fnmatchcase(n, p) for p in plain)]
        problems += [
            f"`{n}` is in {module.__name__}.__all__ but not listed (or end the row with ...)" for n in unlisted
        ]
    return problems


ROWS = room_rows(DOC.read_text(encoding="utf-8"))


def test_the_tables_are_found():
    rooms = [room for room, _, _ in ROWS]
    assert {"service/live/", "offline/twin/", "models/", "stimulus/"} <= set(rooms), rooms


@pytest.mark.parametrize(("room", "listed", "partial"), ROWS, ids=[row[0] for row in ROWS])
def test_a_rooms_row_is_its_public_names(room, listed, partial):
    problems = check_room(room, listed, partial)
    assert not problems, f"docs/architecture.md, row {room}:\n" + "\n".join(problems)


def test_the_checker_reads_a_row():
    text = "| room | holds | public names |\n|---|---|---|\n| `service/policy.py` | x | `raise_errors` |\n"
    assert room_rows(text) == [("service/policy.py", ["raise_errors"], False)]
    assert check_room("service/policy.py", ["raise_errors"], False) == []
    assert check_room("service/policy.py", [], False) != []  # an unlisted name
    assert check_room("service/policy.py", [], True) == []  # "..." allows it
    assert check_room("service/policy.py", ["raise_errors", "nothing_such"], True) != []
    assert check_room("service/protocol/", ["DEFAULT_*"], True) == []
