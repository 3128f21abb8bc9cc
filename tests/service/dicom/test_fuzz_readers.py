"""Fuzzing the readers: corrupted DICOM (mosaic, enhanced, slices) and NIfTI bytes never escape as anything but
a named intake error or a valid Volume.

Each case writes a clean, seeded, non-cubic volume with the intake writers, then mutates its bytes (truncation,
bit flips, random insertions and deletions) or one header field (DICOM elements through pydicom, NIfTI header
fields by offset, including NaN, infinities, zero and negative sizes) and reads it with
``service.intake.assembly.read_volume``. Warnings are recorded, not escalated, as they would be in the service. The
number of cases run per flavour is checked at the end (and printed with ``-s``).
"""

from __future__ import annotations

import gzip
import io
import struct
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from service.intake.assembly import read_volume
from service.scanner.writers import write_volume
from service.volume import IntakeError, Volume

SHAPE = (6, 7, 5)
N_DEFAULT = 60  # examples per flavour in the default run (x 4 flavours + NIfTI fields)
N_SLOW = 1500
#: flavour -> (fmt, vendor, file name)
FLAVOURS = {
    "mosaic": ("mosaic", "siemens", "001_000001_000003.dcm"),
    "enhanced": ("enhanced", "philips", "001_000001_000003.dcm"),
    "slices": ("slices", "ge", "001_000001_000003"),
    "nifti": ("nifti", "siemens", "001_000001_000003.nii"),
    "nifti-gz": ("nifti", "siemens", "001_000001_000003.nii.gz"),
}
OUTCOMES: dict[str, Counter] = {}  # flavour -> outcome of every read_volume call
CASES: Counter = Counter()  # flavour -> mutated inputs tried

# --- the clean files ---------------------------------------------------------------------------------------


def _affine() -> np.ndarray:
    a = np.diag([3.0, 3.2, 3.5, 1.0])
    a[:3, 3] = (-9.0, -11.0, -7.0)
    return a


class _Clean(dict):
    """flavour -> (file bytes, file names, folder); short repr so a failing example prints readably."""

    def __repr__(self) -> str:
        return f"<clean files: {', '.join(self)}>"


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> dict[str, tuple[list[bytes], list[str], Path]]:
    """flavour -> (file bytes, file names, a folder to play in); the first file is the one fuzzed."""
    rng = np.random.default_rng(7)
    data = rng.integers(0, 900, size=SHAPE).astype(np.float32)
    data[0, 0, 0] = 3  # the volume index, so a mixed-up read is visible
    out = _Clean()
    for flavour, (fmt, vendor, name) in FLAVOURS.items():
        folder = tmp_path_factory.mktemp(f"clean-{flavour}")
        files = write_volume(data, _affine(), folder / name, fmt, acquisition=3, tr=2.0, vendor=vendor)
        play = tmp_path_factory.mktemp(f"fuzz-{flavour}")
        out[flavour] = ([f.read_bytes() for f in files], [f.name for f in files], play)
        vol = read_volume(files[0])  # the clean file reads back exactly
        np.testing.assert_array_equal(vol.data, data)
    return out


# --- mutations ---------------------------------------------------------------------------------------------

_byte_op = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0.0, 1.0)),
    st.tuples(st.just("flip"), st.floats(0.0, 1.0), st.integers(1, 255)),
    st.tuples(st.just("insert"), st.floats(0.0, 1.0), st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("delete"), st.floats(0.0, 1.0), st.integers(1, 256)),
    st.tuples(st.just("head"), st.integers(0, 2047), st.integers(0, 255)),  # the header region, byte by byte
)


def _apply(blob: bytes, op: tuple) -> bytes:
    kind, n = op[0], len(blob)
    if n == 0:
        return op[2] if kind == "insert" else blob
    if kind == "head":
        i = op[1] % max(n, 1)
        return blob[:i] + bytes([op[2]]) + blob[i + 1 :]
    i = int(op[1] * n)
    if kind == "truncate":
        return blob[:i]
    if kind == "flip":
        i = min(i, n - 1)
        return blob[:i] + bytes([blob[i] ^ op[2]]) + blob[i + 1 :]
    if kind == "insert":
        return blob[:i] + op[2] + blob[i:]
    return blob[:i] + blob[i + op[2] :]  # delete


_DICOM_FIELDS = [
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "SamplesPerPixel",
    "NumberOfFrames",
    "ImageOrientationPatient",
    "ImagePositionPatient",
    "PixelSpacing",
    "SliceThickness",
    "SpacingBetweenSlices",
    "AcquisitionNumber",
    "InstanceNumber",
    "TemporalPositionIdentifier",
    "RescaleSlope",
    "RescaleIntercept",
    "RepetitionTime",
    "ImageType",
    "SeriesNumber",
    "SOPClassUID",
    "PixelData",
    "SharedFunctionalGroupsSequence",
    "PerFrameFunctionalGroupsSequence",
    "ImagesInAcquisition",
    (0x0019, 0x100A),  # Siemens NumberOfImagesInMosaic
    (0x0029, 0x1010),  # Siemens CSA image header
    (0x0029, 0x1020),  # Siemens CSA series header
    (0x2005, 0x100E),  # Philips scale slope
]
_values = st.one_of(
    st.just(None),  # delete the element
    st.integers(-(2**31), 2**31 - 1),
    st.sampled_from([0, 1, -1, 2, 3, 7, 8, 12, 16, 32, 64, 65535]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=24),
    st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), max_size=8),
    st.binary(max_size=80),
)


def _mutate_dicom(blob: bytes, field: str | tuple[int, int], value) -> bytes:
    """Set one element (or delete it with None) and re-encode; an unencodable value deletes the element."""
    import pydicom
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import dcmwrite

    ds = pydicom.dcmread(io.BytesIO(blob))
    tag = field if isinstance(field, tuple) else pydicom.datadict.tag_for_keyword(field)
    for attempt in (value, None):
        if tag not in ds:
            if attempt is None:
                break
            ds.add_new(
                tag, pydicom.datadict.dictionary_VR(tag) if pydicom.datadict.dictionary_has_tag(tag) else "UN", b""
            )
        try:
            if attempt is None:
                del ds[tag]
            else:
                elem = ds[tag]
                if elem.VR == "SQ":
                    elem.value = elem.value[: max(0, int(abs(hash(str(attempt))) % 3) - 1)]
                elif elem.VR in ("OB", "OW", "UN", "OF") or isinstance(attempt, bytes):
                    elem.value = attempt if isinstance(attempt, bytes) else str(attempt).encode()[:64]
                else:
                    elem.value = attempt
            buf = DicomBytesIO()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # pydicom warns about values that do not fit the VR
                dcmwrite(buf, ds, enforce_file_format=False)
            return buf.getvalue()
        except Exception:  # noqa: BLE001 - this value cannot be encoded with this VR: delete the element instead
            if tag in ds:
                del ds[tag]
    buf = DicomBytesIO()
    dcmwrite(buf, ds, enforce_file_format=False)
    return buf.getvalue()


#: NIfTI-1 header fields: (offset, struct format)
_NIFTI_FIELDS = {
    "sizeof_hdr": (0, "<i"),
    "dim0": (40, "<h"),
    "dim1": (42, "<h"),
    "dim2": (44, "<h"),
    "dim3": (46, "<h"),
    "dim4": (48, "<h"),
    "datatype": (70, "<h"),
    "bitpix": (72, "<h"),
    "pixdim0": (76, "<f"),
    "pixdim1": (80, "<f"),
    "pixdim4": (92, "<f"),
    "vox_offset": (108, "<f"),
    "scl_slope": (112, "<f"),
    "scl_inter": (116, "<f"),
    "xyzt_units": (123, "<b"),
    "qform_code": (252, "<h"),
    "sform_code": (254, "<h"),
    "quatern_b": (256, "<f"),
    "qoffset_x": (268, "<f"),
    "srow_x0": (280, "<f"),
    "srow_z3": (340, "<f"),
    "magic": (344, "<i"),
}
_nifti_values = st.one_of(
    st.integers(-(2**15), 2**15 - 1),
    st.sampled_from([0, 1, -1, 2, 4, 8, 16, 64, 128, 256, 348, 352, 540, 2**30]),
    st.floats(allow_nan=True, allow_infinity=True, width=32),
)


def _mutate_nifti(blob: bytes, field: str, value) -> bytes:
    gz = blob[:2] == b"\x1f\x8b"
    raw = bytearray(gzip.decompress(blob) if gz else blob)
    offset, fmt = _NIFTI_FIELDS[field]
    if fmt[-1] in "ihb":
        bits = struct.calcsize(fmt) * 8
        v = int(value) if np.isfinite(value) else 0
        v = (v + 2 ** (bits - 1)) % 2**bits - 2 ** (bits - 1)
    else:
        with np.errstate(over="ignore"):
            v = float(np.float32(value))  # beyond float32: inf, as a writer would store it
    struct.pack_into(fmt, raw, offset, v)
    return gzip.compress(bytes(raw), mtime=0) if gz else bytes(raw)


# --- the check ---------------------------------------------------------------------------------------------


def _check(flavour: str, files: list[bytes], names: list[str], play: Path) -> str:
    """Write the (mutated) files into a clean folder, read, and classify; anything unnamed fails the test."""
    for old in play.iterdir():
        old.unlink()
    for blob, name in zip(files, names):
        (play / name).write_bytes(blob)
    outcomes = []
    targets = [play / names[0]] + ([play / names[-1]] if len(names) > 1 else [])  # a fuzzed slice and a clean one
    for target in targets:
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")  # as in the service: a library warning is not an error
            try:
                vol = read_volume(target)
            except IntakeError as exc:
                assert str(exc) and exc.path is not None, f"{type(exc).__name__} without a file or a reason"
                outcomes.append(type(exc).__name__)
                continue
        _assert_valid(vol)
        outcomes.append("Volume")
    OUTCOMES.setdefault(flavour, Counter()).update(outcomes)
    CASES[flavour] += 1
    return outcomes[0]


def _assert_valid(vol: Volume) -> None:
    assert isinstance(vol, Volume)
    assert vol.data.ndim == 3 and vol.data.dtype == np.float32 and min(vol.data.shape) >= 1
    assert vol.affine.shape == (4, 4) and vol.affine.dtype == np.float64 and np.all(np.isfinite(vol.affine))
    assert vol.acquisition >= 0 and vol.index >= 0 and len(vol.sha256) == 64


def _run_bytes(clean, flavour: str, ops: list[tuple]) -> None:
    files, names, play = clean[flavour]
    blob = files[0]
    for op in ops:
        blob = _apply(blob, op)
    _check(flavour, [blob, *files[1:]], names, play)


def _run_field(clean, flavour: str, field, value) -> None:
    files, names, play = clean[flavour]
    if flavour.startswith("nifti"):
        blob = _mutate_nifti(files[0], field, value)
    else:
        blob = _mutate_dicom(files[0], field, value)
    _check(flavour, [blob, *files[1:]], names, play)


_FAST = settings(
    max_examples=N_DEFAULT,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
_LONG = settings(
    max_examples=N_SLOW,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
_FLAVOURS = st.sampled_from(sorted(FLAVOURS))


def _checks_its_cases(flavours):
    """Make a fuzz test check its own work: the cases it tried cover ``flavours``, at least N_DEFAULT of them
    (each test on its own, in any order; no test reads another's counts)."""

    def wrap(fuzz):
        def test(clean):
            before = Counter(CASES)
            fuzz(clean)
            ran = CASES - before
            print(f"\n{fuzz.__name__}: {sum(ran.values())} cases", dict(ran))
            assert set(ran) == set(flavours), f"flavours fuzzed: {sorted(ran)}, expected {sorted(flavours)}"
            assert sum(ran.values()) >= N_DEFAULT

        test.__name__, test.__doc__ = fuzz.__name__, fuzz.__doc__
        return test

    return wrap


_DICOM = st.sampled_from(["mosaic", "enhanced", "slices"])
_NIFTI = st.sampled_from(["nifti", "nifti-gz"])


@_checks_its_cases(FLAVOURS)
@_FAST
@given(flavour=_FLAVOURS, ops=st.lists(_byte_op, min_size=1, max_size=3))
# a damaged sibling slice file whose header pydicom reads but cannot convert (unknown VR, multi-valued or garbled
# acquisition number): found by the long fuzz, kept as regressions
@example(flavour="slices", ops=[("insert", 0.7221816772353867, b"ST")])
@example(flavour="slices", ops=[("insert", 0.72265625, b"S")])
@example(flavour="slices", ops=[("insert", 0.72265625, b"\x00")])
def test_corrupted_bytes_give_a_named_error_or_a_valid_volume(clean, flavour, ops):
    _run_bytes(clean, flavour, ops)


@_checks_its_cases(["mosaic", "enhanced", "slices"])
@_FAST
@given(flavour=_DICOM, field=st.sampled_from(_DICOM_FIELDS), value=_values)
@example(flavour="slices", field="ImagePositionPatient", value=[-0.58, -0.59])
@example(flavour="enhanced", field="PixelSpacing", value=[float("nan"), 1.0])
def test_mutated_dicom_elements_give_a_named_error_or_a_valid_volume(clean, flavour, field, value):
    _run_field(clean, flavour, field, value)


@_checks_its_cases(["nifti", "nifti-gz"])
@_FAST
@given(flavour=_NIFTI, field=st.sampled_from(sorted(_NIFTI_FIELDS)), value=_nifti_values)
# failures the fuzzing found once, kept as regressions
@example(flavour="nifti", field="dim1", value=0)
@example(flavour="nifti", field="dim3", value=float("inf"))
@example(flavour="nifti", field="xyzt_units", value=-1)
@example(flavour="nifti-gz", field="scl_inter", value=float("nan"))
@example(flavour="nifti", field="scl_inter", value=float("inf"))
@example(flavour="nifti", field="vox_offset", value=float("nan"))
@example(flavour="nifti-gz", field="vox_offset", value=float("inf"))
@example(flavour="nifti-gz", field="srow_x0", value=float("nan"))
def test_mutated_nifti_header_fields_give_a_named_error_or_a_valid_volume(clean, flavour, field, value):
    _run_field(clean, flavour, field, value)


def test_known_corruptions_are_named(clean):
    """The deterministic corners: empty file, header only, every truncation point class, garbage head."""
    for flavour, (files, names, play) in clean.items():
        blob = files[0]
        assert _check(flavour, [b"", *files[1:]], names, play) == "IncompleteFileError"
        assert _check(flavour, [blob[: len(blob) // 2], *files[1:]], names, play) == "IncompleteFileError"
        assert _check(flavour, [blob, *files[1:]], names, play) == "Volume"
        noise = np.random.default_rng(0).integers(0, 256, size=len(blob), dtype=np.uint8).tobytes()
        assert _check(flavour, [noise, *files[1:]], names, play) != "Volume"


@pytest.mark.slow
@_LONG
@given(flavour=_FLAVOURS, ops=st.lists(_byte_op, min_size=1, max_size=6))
def test_long_fuzz_of_bytes(clean, flavour, ops):
    _run_bytes(clean, flavour, ops)


@pytest.mark.slow
@_LONG
@given(flavour=_FLAVOURS, field=st.sampled_from(_DICOM_FIELDS + sorted(_NIFTI_FIELDS)), value=_values)
def test_long_fuzz_of_header_fields(clean, flavour, field, value):
    is_nifti_field = isinstance(field, str) and field in _NIFTI_FIELDS
    if flavour.startswith("nifti") != is_nifti_field:
        flavour = "nifti" if is_nifti_field else "mosaic"
    if is_nifti_field and not isinstance(value, (int, float)):
        value = float(len(value)) if hasattr(value, "__len__") else 0.0
    _run_field(clean, flavour, field, value)
