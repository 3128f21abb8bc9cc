"""Formats and vendors: every format round-trips to the same array and RAS+ affine; real Siemens/Philips files
parse; each format's reader (``service.dicom.formats``) and each vendor's rules (``service.dicom.vendor``) on the
writers' files and on the real exports in ``tests/data/scanner-data`` (Siemens XA30 interoperability and
enhanced, Siemens VE11 mosaic, GE real-time EPI).

Fed live to the watcher, the same real exports are tested in ``tests/service/intake/test_real_scanners.py``.
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from service.dicom import exclusion_reason, parse_dicom, slices_per_volume, vendor_of
from service.dicom.formats import EnhancedReader, MosaicReader, SliceReader, reader_for
from service.dicom.vendor import export_mode
from service.intake.assembly import (
    CorruptFileError,
    IncompleteFileError,
    ShapeMismatchError,
    UnsupportedFileError,
    read_image,
    read_slices,
    read_volume,
)
from service.scanner.writers import slice_paths, write_volume
from tests.service.realdata import BY_NAME, decompress

SHAPE = (10, 12, 7)
NIBABEL_DATA = Path(nib.__file__).parent / "nicom" / "tests" / "data"
# nibabel.nicom warns on import that its DICOM readers are experimental; we only use them as a reference.
NICOM_WARNING = "ignore:The DICOM readers are highly experimental:UserWarning"

#: (fmt, vendor, file name) for every flavour the writers produce.
FLAVOURS = [
    ("nifti", "siemens", "vol.nii"),
    ("nifti", "siemens", "vol.nii.gz"),
    ("mosaic", "siemens", "vol.dcm"),
    ("enhanced", "siemens", "vol.dcm"),
    ("enhanced", "philips", "vol.dcm"),
    ("slices", "siemens", "vol"),
    ("slices", "philips", "vol"),
    ("slices", "ge", "vol"),
]


def make_volume(index: int, shape=SHAPE, rng: np.random.Generator | None = None) -> np.ndarray:
    """Integer-valued test volume with its index encoded: ``data[0, 0, 0] == index``, 1000 * index elsewhere."""
    base = np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape) % 997
    if rng is not None:
        base = base + rng.integers(0, 50, size=shape)
    out = (base + 1000.0 * index).astype(np.float32)
    out[0, 0, 0] = index
    return out


def rotation(ax: float, ay: float, az: float) -> np.ndarray:
    ax, ay, az = np.radians([ax, ay, az])
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


AFFINES = {
    "ras": np.array([[3.0, 0, 0, -13.5], [0, 3.0, 0, -16.5], [0, 0, 3.5, -10.5], [0, 0, 0, 1]]),
    "las": np.array([[-3.0, 0, 0, 13.5], [0, 3.0, 0, -16.5], [0, 0, 3.5, -10.5], [0, 0, 0, 1]]),
    "permuted": np.array([[0, 0, 3.5, 10.0], [-3.0, 0, 0, 20.0], [0, -3.0, 0, 30.0], [0, 0, 0, 1]]),
}
ROTATED = AFFINES["ras"].copy()
ROTATED[:3, :3] = rotation(10, -5, 20) @ ROTATED[:3, :3]


def write(tmp_path: Path, data, affine, fmt, vendor, name, **kw) -> list[Path]:
    folder = tmp_path / f"{fmt}-{vendor}-{name.replace('.', '_')}"
    return write_volume(
        data, affine, folder / name, fmt, acquisition=kw.pop("acquisition", 5), tr=2.0, vendor=vendor, **kw
    )


@pytest.mark.parametrize("affine_name", sorted(AFFINES))
@pytest.mark.parametrize(("fmt", "vendor", "name"), FLAVOURS)
def test_round_trip_is_exact(tmp_path, fmt, vendor, name, affine_name):
    data, affine = make_volume(5), AFFINES[affine_name]
    paths = write(tmp_path, data, affine, fmt, vendor, name)
    vol = read_volume(paths[0])
    assert vol.data.dtype == np.float32 and vol.data.shape == SHAPE
    np.testing.assert_array_equal(vol.data, data)
    np.testing.assert_array_equal(vol.affine, affine)
    assert vol.acquisition == 5 and vol.tr == pytest.approx(2.0)
    assert vol.data[0, 0, 0] == 5  # the index encoded in the data survives
    assert len(vol.sha256) == 64


@pytest.mark.parametrize(("fmt", "vendor", "name"), FLAVOURS)
def test_rotated_grid_agrees_across_formats(tmp_path, fmt, vendor, name):
    data = make_volume(2)
    vol = read_volume(write(tmp_path, data, ROTATED, fmt, vendor, name)[0])
    ref = read_volume(write(tmp_path, data, ROTATED, "nifti", "siemens", "ref.nii")[0])
    np.testing.assert_array_equal(vol.data, ref.data)
    np.testing.assert_allclose(vol.affine, ROTATED, atol=1e-5)  # DS text and NIfTI float32 precision
    np.testing.assert_allclose(vol.affine, ref.affine, atol=1e-5)


@pytest.mark.parametrize("fmt", ["mosaic", "enhanced", "slices"])
def test_non_integer_and_negative_data(tmp_path, rng, fmt):
    negative = make_volume(1) - 5000.0  # integer, fits int16
    vol = read_volume(
        write(tmp_path, negative, AFFINES["ras"], fmt, "siemens", "neg.dcm" if fmt != "slices" else "neg")[0]
    )
    np.testing.assert_array_equal(vol.data, negative)
    floats = rng.normal(100.0, 20.0, SHAPE).astype(np.float32)
    vol = read_volume(write(tmp_path, floats, AFFINES["ras"], fmt, "siemens", "f.dcm" if fmt != "slices" else "f")[0])
    step = (floats.max() - floats.min()) / 65535
    assert np.max(np.abs(vol.data - floats)) <= step  # scaled to 16 bits, rounded


def test_nifti2_and_tr_units(tmp_path):
    data = make_volume(3)
    path = write_volume(data, AFFINES["las"], tmp_path / "v2.nii", "nifti", acquisition=3, tr=1.5, nifti_version=2)[0]
    assert nib.load(path).header.sizeof_hdr == 540
    vol = read_volume(path)
    np.testing.assert_array_equal(vol.data, data)
    assert vol.tr == pytest.approx(1.5) and vol.acquisition == 3 and vol.series_number == 1


def test_nifti_acquisition_from_file_name(tmp_path):
    img = nib.Nifti1Image(make_volume(0), AFFINES["ras"])
    img.to_filename(tmp_path / "run1_vol0042.nii")
    assert read_volume(tmp_path / "run1_vol0042.nii").acquisition == 42


def test_slices_assembled_by_position_from_any_order(tmp_path):
    data = make_volume(4)
    paths = write_volume(data, AFFINES["permuted"], tmp_path / "v", "slices", acquisition=4, tr=2.0, vendor="ge")
    assert paths == slice_paths(tmp_path / "v", SHAPE[2])
    vol = read_slices(list(reversed(paths)))
    np.testing.assert_array_equal(vol.data, data)
    np.testing.assert_array_equal(vol.affine, AFFINES["permuted"])
    assert vol.fmt == "slices" and vol.path == paths[0]


def test_missing_slice_is_incomplete_and_foreign_matrix_refused(tmp_path):
    paths = write_volume(make_volume(1), AFFINES["ras"], tmp_path / "a" / "v", "slices", acquisition=1, tr=2.0)
    with pytest.raises(IncompleteFileError, match="6 of 7 slices"):
        read_slices(paths[:-1])
    other = write_volume(
        make_volume(1, shape=(10, 11, 7)), AFFINES["ras"], tmp_path / "b" / "v", "slices", acquisition=1, tr=2.0
    )
    with pytest.raises(ShapeMismatchError, match=r"\(10, 11\).*\(10, 12\)"):
        read_slices(paths[:-1] + other[-1:])


def test_privacy_patient_fields_never_leave_the_reader(tmp_path):
    patient = {"PatientName": "Doe^Jane", "PatientID": "PID-778899", "PatientBirthDate": "19710203"}
    for fmt, vendor, name in FLAVOURS:
        if fmt == "nifti":
            continue
        paths = write(tmp_path, make_volume(1), AFFINES["ras"], fmt, vendor, name, patient=patient)
        assert b"Doe^Jane" in paths[0].read_bytes()  # the writer did put them in the file
        vol = read_volume(paths[0])
        text = repr(vol.summary()) + repr({k: v for k, v in vars(vol).items() if k != "data"})
        for secret in ("Doe", "Jane", "PID-778899", "19710203"):
            assert secret not in text
        assert not any("patient" in name.lower() for name in vars(vol))


@pytest.mark.filterwarnings(NICOM_WARNING)
@pytest.mark.parametrize("fmt", ["mosaic", "enhanced"])
def test_nibabel_reads_our_dicom_to_the_same_image(tmp_path, fmt):
    from nibabel.nicom import csareader, dicomwrappers

    data, affine = make_volume(2), AFFINES["permuted"]
    path = write_volume(data, affine, tmp_path / "v.dcm", fmt, acquisition=2, tr=2.0)[0]
    wrapper = dicomwrappers.wrapper_from_file(str(path))
    if fmt == "mosaic":
        assert type(wrapper).__name__ == "MosaicWrapper"
        csa = csareader.get_csa_header(wrapper.dcm_data)
        assert csareader.get_n_mosaic(csa) == SHAPE[2]
    theirs = nib.as_closest_canonical(nib.Nifti1Image(_nibabel_xyz(wrapper.get_data()), _nibabel_ras(wrapper.affine)))
    ours = nib.as_closest_canonical(nib.Nifti1Image(data, affine))
    np.testing.assert_array_equal(theirs.get_fdata(), ours.get_fdata())
    np.testing.assert_allclose(theirs.affine, ours.affine, atol=1e-6)


def _nibabel_ras(wrapper_affine: np.ndarray) -> np.ndarray:
    """nibabel's wrapper affine maps (row, column, slice) to LPS: make it (column, row, slice) -> RAS."""
    swap = np.eye(4)[[1, 0, 2, 3]]
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ wrapper_affine @ swap


def _nibabel_xyz(data: np.ndarray) -> np.ndarray:
    """nibabel's wrapper data is [row, column, slice]; ours is [column, row, slice]."""
    return np.ascontiguousarray(data.transpose(1, 0, 2), dtype=np.float32)


def _bundled(name: str) -> bytes:
    raw = (NIBABEL_DATA / name).read_bytes()
    return gzip.decompress(raw) if name.endswith(".gz") else raw


@pytest.mark.filterwarnings(NICOM_WARNING)
# nibabel's wrapper warns that this Philips file has no private scale factor (neither reader applies one)
@pytest.mark.filterwarnings("ignore:Unable to find Philips private scale factor:UserWarning")
@pytest.mark.parametrize(
    "name",
    [
        "siemens_dwi_0.dcm.gz",
        "siemens_dwi_1000.dcm.gz",
        # 256x256x176 enhanced frames: nibabel's wrapper alone takes seconds
        pytest.param("philips_mprage.dcm.gz", marks=pytest.mark.slow),
    ],
)
def test_bundled_real_dicoms_match_nibabel(name):
    from nibabel.nicom import dicomwrappers

    from service.intake.assembly import assemble

    raw = _bundled(name)
    vol = assemble([read_image(NIBABEL_DATA / name.removesuffix(".gz"), raw)])
    wrapper = dicomwrappers.wrapper_from_data(pydicom.dcmread(io.BytesIO(raw)))
    theirs = nib.as_closest_canonical(nib.Nifti1Image(_nibabel_xyz(wrapper.get_data()), _nibabel_ras(wrapper.affine)))
    ours = nib.as_closest_canonical(nib.Nifti1Image(vol.data, vol.affine))
    np.testing.assert_allclose(ours.get_fdata(), theirs.get_fdata(), rtol=1e-5)
    # nibabel takes the slice step from the first two frames, we average over all (MPRAGE: 1.3 um apart)
    np.testing.assert_allclose(ours.affine, theirs.affine, atol=5e-3)
    assert vol.fmt == ("philips-enhanced" if "philips" in name else "mosaic")


@pytest.mark.filterwarnings(NICOM_WARNING)
@pytest.mark.parametrize("name", ["0.dcm", "1.dcm", "csa_slice_norm.dcm"])
def test_bundled_mosaic_headers_match_nibabel_geometry(name):
    """These files keep real Siemens mosaic headers but not the matching pixel data: compare geometry."""
    from nibabel.nicom import dicomwrappers

    from service.intake.assembly import assemble

    raw = _bundled(name)
    img = read_image(NIBABEL_DATA / name, raw, pixels=False)
    wrapper = dicomwrappers.wrapper_from_data(pydicom.dcmread(io.BytesIO(raw)))
    assert img.fmt == "mosaic" and img.frames.shape[0] == wrapper.image_shape[2]
    vol = assemble([img])
    np.testing.assert_allclose(vol.affine, _nibabel_ras(wrapper.affine), atol=1e-4)
    assert vol.tr == pytest.approx(float(wrapper.get("RepetitionTime")) / 1000)


@pytest.mark.parametrize(
    ("fmt", "name"), [("mosaic", "v.dcm"), ("enhanced", "v.dcm"), ("nifti", "v.nii"), ("nifti", "v.nii.gz")]
)
def test_every_truncation_is_incomplete(tmp_path, fmt, name):
    path = write_volume(make_volume(1), AFFINES["ras"], tmp_path / name, fmt, acquisition=1, tr=2.0)[0]
    raw = path.read_bytes()
    cut = tmp_path / ("cut_" + name)
    for n in sorted({0, 10, 131, 132, 200, 400, len(raw) // 3, len(raw) // 2, len(raw) - 3, len(raw) - 1}):
        cut.write_bytes(raw[:n])
        with pytest.raises(IncompleteFileError):
            read_volume(cut)


def test_corrupt_header_and_pixel_data(tmp_path):
    path = write_volume(make_volume(1), AFFINES["ras"], tmp_path / "v.dcm", "mosaic", acquisition=1, tr=2.0)[0]
    raw = bytearray(path.read_bytes())
    bad = tmp_path / "garbage_header.dcm"
    bad.write_bytes(bytes(raw[:132]) + b"\xff" * 64 + bytes(raw[196:]))
    with pytest.raises(CorruptFileError, match="garbage_header.dcm"):
        read_volume(bad)
    ds = pydicom.dcmread(path)
    ds.PixelData = ds.PixelData + b"\x00" * 64
    ds.save_as(tmp_path / "long_pixels.dcm")
    with pytest.raises(CorruptFileError, match="pixel data is .* bytes"):
        read_volume(tmp_path / "long_pixels.dcm")
    nifti = tmp_path / "bad.nii"
    nifti.write_bytes(b"\x00" * 400)
    with pytest.raises(CorruptFileError, match="not a NIfTI header"):
        read_volume(nifti)


def test_non_image_and_unrelated_files_are_unsupported(tmp_path):
    ds = pydicom.dcmread(
        write_volume(make_volume(1), AFFINES["ras"], tmp_path / "v.dcm", "mosaic", acquisition=1, tr=2.0)[0]
    )
    for keyword in ("PixelData", "Rows", "Columns"):
        delattr(ds, keyword)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.66"  # Raw Data Storage
    ds.save_as(tmp_path / "report.dcm")
    with pytest.raises(UnsupportedFileError, match="not an MR image"):
        read_volume(tmp_path / "report.dcm")
    (tmp_path / "notes.txt").write_text("hello\n" * 50)
    with pytest.raises(UnsupportedFileError):
        read_volume(tmp_path / "notes.txt")
    nib.Nifti1Image(np.zeros((4, 5, 6, 3), np.float32), np.eye(4)).to_filename(tmp_path / "run.nii")
    with pytest.raises(UnsupportedFileError, match="one 3-D volume"):
        read_volume(tmp_path / "run.nii")


def test_slice_count_from_vendor_headers_when_images_in_acquisition_is_absent(tmp_path):
    from service.dicom.csa import ascconv, write_csa

    data = make_volume(2)
    for vendor in ("siemens", "philips"):
        paths = write_volume(
            data, AFFINES["ras"], tmp_path / vendor / "v", "slices", acquisition=2, tr=2.0, vendor=vendor
        )
        for p in paths:
            ds = pydicom.dcmread(p)
            if "ImagesInAcquisition" in ds:  # the real layouts of these vendors write none
                del ds.ImagesInAcquisition
            if vendor == "siemens":
                block = ds.private_block(0x0029, "SIEMENS CSA HEADER", create=True)
                block.add_new(
                    0x20, "OB", write_csa([("MrPhoenixProtocol", "UN", [ascconv({"sSliceArray.lSize": SHAPE[2]})])])
                )
            else:
                ds.add_new((0x2001, 0x0010), "LO", "Philips Imaging DD 001")
                ds.add_new((0x2001, 0x1018), "SL", SHAPE[2])
            ds.save_as(p)
        np.testing.assert_array_equal(read_volume(paths[3]).data, data)
        with pytest.raises(IncompleteFileError, match="6 of 7"):
            read_slices(paths[1:])


# --- one reader per format, the vendor decided once --------------------------------------------------------------

#: what each real export parses to: its reader, vendor, export mode, the header that tells the slice count, and
#: the rules that number its volumes
REAL = {
    "siemens-xa30-interoperability": (
        SliceReader,
        "siemens",
        "siemens-xa-interoperability",
        "Siemens protocol sSliceArray.lSize",
        {"AcquisitionNumber"},
    ),
    "ge-epirt": (
        SliceReader,
        "ge",
        "ge-slices",
        "ImagesInAcquisition",
        {"AcquisitionNumber", "InstanceNumber with 8 slices per volume"},  # AcquisitionNumber stays 1
    ),
    "siemens-xa30-enhanced": (
        EnhancedReader,
        "siemens",
        "siemens-xa-enhanced",
        "NumberOfFrames",
        {"one volume per file (AcquisitionNumber)"},
    ),
    "siemens-e11-mosaic": (
        MosaicReader,
        "siemens",
        "siemens-mosaic",
        "CSA NumberOfImagesInMosaic",
        {"one volume per file (AcquisitionNumber)"},
    ),
}


@pytest.mark.parametrize("name", sorted(REAL))
def test_a_real_export_is_read_by_its_formats_reader(name, tmp_path):
    series = BY_NAME[name]
    reader, vendor, export, slices_from, volume_rules = REAL[name]
    files = decompress(series, tmp_path)  # in acquisition order
    per_volume = len(files) // series.volumes
    frames = (1 if reader is SliceReader else series.matrix[2], series.matrix[1], series.matrix[0])
    rules = set()
    for k, path in enumerate(files):
        raw = path.read_bytes()
        ds = pydicom.dcmread(io.BytesIO(raw), stop_before_pixels=True)
        assert vendor_of(ds) == vendor
        assert type(reader_for(ds, str(ds.SOPClassUID), vendor, path)) is reader
        img = parse_dicom(raw, path)
        assert (img.fmt, img.export, vendor_of(img.vendor)) == (reader.fmt, export, vendor)
        assert img.slices_expected == series.matrix[2] and img.slices_from == slices_from
        assert img.acquisition == k // per_volume + 1 and img.frames.shape == frames
        assert img.exclusion is None
        rules.add(img.volume_from)
    assert rules == volume_rules


#: the reader and export mode of every DICOM flavour the writers produce
WRITTEN = [
    ("mosaic", "siemens", MosaicReader, "siemens-mosaic"),
    ("enhanced", "siemens", EnhancedReader, "siemens-xa-enhanced"),
    ("enhanced", "philips", EnhancedReader, "philips-enhanced"),
    ("slices", "siemens", SliceReader, "siemens-xa-interoperability"),
    ("slices", "philips", SliceReader, "philips-slices"),
    ("slices", "ge", SliceReader, "ge-slices"),
]


@pytest.mark.parametrize(("fmt", "vendor", "reader", "export"), WRITTEN)
def test_the_dispatcher_picks_one_reader_per_written_format(tmp_path, fmt, vendor, reader, export):
    data = make_volume(3)
    paths = write(tmp_path, data, AFFINES["ras"], fmt, vendor, "v" if fmt == "slices" else "v.dcm", acquisition=3)
    ds = pydicom.dcmread(paths[0])
    assert vendor_of(ds) == vendor
    chosen = reader_for(ds, str(ds.SOPClassUID), vendor, paths[0])
    assert type(chosen) is reader
    layout = chosen.read(ds, paths[0], True, vendor)
    assert layout.fmt == reader.fmt and layout.acquisition == 3
    assert layout.slices_expected == SHAPE[2]
    # the frames come out scaled to the real values (Philips: its private scale slope applied)
    np.testing.assert_array_equal(layout.frames[0], data[:, :, 0].T)
    assert parse_dicom(paths[0].read_bytes(), paths[0]).export == export


@pytest.mark.parametrize(
    ("manufacturer", "vendor"),
    [
        ("SIEMENS", "siemens"),
        ("Siemens Healthineers", "siemens"),
        ("GE MEDICAL SYSTEMS", "ge"),
        ("GE HEALTHCARE", "ge"),
        ("ge medical systems", "ge"),
        ("GEMS", "other"),
        ("GENERIC SCANNER", "other"),
        ("Philips Medical Systems", "philips"),
        ("Philips Healthcare", "philips"),
        ("Canon Medical Systems", "other"),
        ("", "other"),
    ],
)
def test_vendor_of_a_manufacturer(manufacturer, vendor):
    assert vendor_of(manufacturer) == vendor
    ds = pydicom.Dataset()
    ds.Manufacturer = manufacturer
    assert vendor_of(ds) == vendor
    assert vendor_of(pydicom.Dataset()) == "other"  # no Manufacturer at all


def test_export_modes():
    assert export_mode("siemens", "slice", True, "") == "siemens-xa-interoperability"  # MFSPLIT
    assert export_mode("siemens", "slice", False, "syngo MR XA30") == "siemens-xa-interoperability"
    assert export_mode("siemens", "slice", False, "syngo MR E11") == "siemens-slices"
    assert export_mode("siemens", "enhanced", False, "") == "siemens-xa-enhanced"
    assert export_mode("siemens", "mosaic", False, "") == "siemens-mosaic"
    assert export_mode("ge", "slice", False, "") == "ge-slices"
    assert export_mode("philips", "enhanced", False, "") == "philips-enhanced"
    assert export_mode("other", "slice", False, "XA") == "other-slices"


def test_the_scanning_sequence_check_spares_philips_only():
    assert exclusion_reason((), "fMRI", "GR", "Philips Medical Systems") is None
    for manufacturer in ("SIEMENS", "GE MEDICAL SYSTEMS", ""):
        assert exclusion_reason((), "fMRI", "GR", manufacturer) == "ScanningSequence 'GR' is not EPI"


def test_ge_slice_count_from_its_private_field_only_for_ge(tmp_path):
    paths = write_volume(make_volume(1), AFFINES["ras"], tmp_path / "v", "slices", acquisition=1, tr=2.0, vendor="ge")
    ds = pydicom.dcmread(paths[0])
    del ds.ImagesInAcquisition
    assert slices_per_volume(ds, "GE MEDICAL SYSTEMS") == (SHAPE[2], "GE locations in acquisition (0021,104F)")
    assert slices_per_volume(ds, "Philips Medical Systems") == (None, "")  # another vendor's field is not read


def test_a_broken_siemens_csa_header_is_corrupt(tmp_path):
    path = write_volume(make_volume(1), AFFINES["ras"], tmp_path / "v.dcm", "mosaic", acquisition=1, tr=2.0)[0]
    ds = pydicom.dcmread(path)
    ds.private_block(0x0029, "SIEMENS CSA HEADER")[0x10].value = b"SV10\x04\x03\x02\x01" + b"\xff" * 24
    ds.save_as(path)
    with pytest.raises(CorruptFileError, match="Siemens CSA header"):
        read_volume(path)
