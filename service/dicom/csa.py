"""Siemens CSA private headers (``(0029,xx10)`` image, ``(0029,xx20)`` series): read and write.

The layout follows the SPM / nibabel description: CSA2 starts with ``SV10``, then the tag count and ``77``;
each tag is ``64s`` name, ``i`` VM, ``4s`` VR, ``i`` SyngoDT, ``i`` item count, ``i`` 77; each item is four
int32 (CSA2: the second is the length) followed by the value, padded to 4 bytes. CSA1 (no ``SV10``) is read
too. Only this module knows the byte layout; :func:`read_csa` returns ``{name: [values as text]}``.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence

__all__ = ["CSA_CREATOR", "read_csa", "write_csa", "csa_int", "csa_vector", "ascconv"]

#: Private creator of the CSA elements in group 0x0029.
CSA_CREATOR = "SIEMENS CSA HEADER"

_SYNGO_DT = {"IS": 6, "FD": 4, "DS": 3, "LO": 19, "SH": 22, "UL": 9, "US": 10, "SL": 7, "ST": 20, "UT": 27, "CS": 16}
_MAX_TAGS = 1000


class CSAError(ValueError):
    """A CSA header whose layout cannot be read."""


def _nt(raw: bytes) -> str:
    """Bytes up to the first NUL, as latin-1 text."""
    return raw.split(b"\x00", 1)[0].decode("latin-1")


def read_csa(raw: bytes) -> dict[str, list[str]]:
    """Parse a CSA1/CSA2 header into ``{tag name: [item texts]}`` (empty items dropped).

    Raises
    ------
    CSAError
        When the counts or lengths point outside the buffer.
    """
    csa2 = raw[:4] == b"SV10"
    pos = 8 if csa2 else 0
    try:
        n_tags, _check = struct.unpack_from("<2I", raw, pos)
    except struct.error as exc:
        raise CSAError(f"CSA header too short ({len(raw)} bytes)") from exc
    if not 0 < n_tags <= _MAX_TAGS:
        raise CSAError(f"CSA header claims {n_tags} tags")
    pos += 8
    out: dict[str, list[str]] = {}
    first_n_items = 0
    try:
        for tag_no in range(n_tags):
            name, vm, _vr, _dt, n_items, _last = struct.unpack_from("<64si4s3i", raw, pos)
            pos += 84
            if tag_no == 1:
                first_n_items = n_items
            if not 0 <= n_items <= _MAX_TAGS:
                raise CSAError(f"CSA tag {_nt(name)!r} claims {n_items} items")
            n_values = vm if vm else n_items
            items = []
            for item_no in range(n_items):
                x0, x1, _x2, _x3 = struct.unpack_from("<4i", raw, pos)
                pos += 16
                length = x1 if csa2 else x0 - first_n_items
                if length < 0 or pos + length > len(raw):
                    if csa2:
                        raise CSAError(f"CSA tag {_nt(name)!r}: item runs past the header")
                    break
                text = _nt(raw[pos : pos + length])
                if item_no < n_values and length:
                    items.append(text)
                pos += length + (-length % 4)
            out[_nt(name)] = items
    except struct.error as exc:
        raise CSAError(f"CSA header ends inside its tag list ({len(raw)} bytes)") from exc
    return out


def csa_int(csa: Mapping[str, list[str]], name: str) -> int | None:
    """The first value of ``name`` as an int, or None."""
    items = csa.get(name) or []
    try:
        return int(float(items[0])) if items and items[0].strip() else None
    except ValueError:
        return None


def csa_vector(csa: Mapping[str, list[str]], name: str, n: int) -> list[float] | None:
    """The first ``n`` values of ``name`` as floats, or None when fewer are present."""
    items = [s for s in (csa.get(name) or []) if s.strip()]
    if len(items) < n:
        return None
    try:
        return [float(s) for s in items[:n]]
    except ValueError:
        return None


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return repr(value)
    return str(value)


def write_csa(tags: Sequence[tuple[str, str, Sequence[object]]]) -> bytes:
    """Build a CSA2 header from ``(name, VR, values)`` triples (values written as text, NUL-terminated)."""
    parts = [b"SV10", b"\x04\x03\x02\x01", struct.pack("<2I", len(tags), 77)]
    for name, vr, values in tags:
        vm = len(values)
        parts.append(
            struct.pack(
                "<64si4s3i",
                name.encode("latin-1"),
                vm,
                vr.encode("ascii") + b"\x00",
                _SYNGO_DT.get(vr, 0),
                vm,
                77 if vm else 205,
            )
        )
        for value in values:
            text = _fmt(value).encode("latin-1") + b"\x00"
            parts.append(struct.pack("<4i", len(text), len(text), 77, len(text)))
            parts.append(text + b"\x00" * (-len(text) % 4))
    return b"".join(parts)


def ascconv(entries: Mapping[str, object]) -> str:
    """A minimal ``MrPhoenixProtocol`` text with an ASCCONV block holding ``entries``."""
    lines = ["### ASCCONV BEGIN ###"]
    lines += [f"{key} = {value}" for key, value in entries.items()]
    lines.append("### ASCCONV END ###")
    return "\n".join(lines) + "\n"
