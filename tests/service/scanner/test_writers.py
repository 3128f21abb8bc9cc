"""Writers: atomic or chunked files, the DICOM fields real readers need, deterministic series identity."""

from __future__ import annotations

import os
import threading
import time

import nibabel as nib
import numpy as np
import pydicom
import pytest

from service.dicom.csa import read_csa
from service.intake.assembly import IncompleteFileError, read_volume
from service.scanner.writers import FORMATS, slice_paths, write_volume
from tests.service.dicom.test_formats import AFFINES, NICOM_WARNING, SHAPE, make_volume


def test_atomic_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    renames = []
    real_replace = os.replace

    def spy(src, dst):
        renames.append((os.path.basename(src), os.path.basename(dst)))
        assert os.path.getsize(src) > 0 and not os.path.exists(dst)  # complete before it gets its name
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    for fmt in FORMATS:
        name = {"nifti": "v.nii.gz", "slices": "v"}.get(fmt, f"{fmt}.dcm")
        write_volume(make_volume(1), AFFINES["ras"], tmp_path / fmt / name, fmt, acquisition=1, tr=2.0)
    assert all(src.startswith(".") and src.endswith(".tmp") for src, _ in renames)
    assert len(renames) == 3 + SHAPE[2]
    assert not [p for p in tmp_path.rglob(".*")]


def test_chunked_write_is_visible_half_written(tmp_path):
    path = tmp_path / "v.dcm"
    seen = []

    def writer():
        write_volume(
            make_volume(2),
            AFFINES["ras"],
            path,
            "mosaic",
            acquisition=2,
            tr=2.0,
            chunked=True,
            chunk_delay=0.1,
            n_chunks=4,
        )

    thread = threading.Thread(target=writer)
    thread.start()
    deadline = time.monotonic() + 5
    while thread.is_alive() and time.monotonic() < deadline:
        if path.exists():
            try:
                read_volume(path)
                seen.append("complete")
            except IncompleteFileError:
                seen.append("incomplete")
        time.sleep(0.02)
    thread.join(timeout=5)
    assert "incomplete" in seen  # the partial file existed under its final name and was recognised as such
    assert read_volume(path).data[0, 0, 0] == 2


def test_mosaic_fields_and_csa_header(tmp_path):
    path = write_volume(
        make_volume(3), AFFINES["ras"], tmp_path / "m.dcm", "mosaic", acquisition=3, tr=2.0, series_number=7
    )[0]
    ds = pydicom.dcmread(path)
    assert list(ds.ImageType) == ["ORIGINAL", "PRIMARY", "M", "ND", "MOSAIC"]
    assert (ds.Rows, ds.Columns) == (3 * SHAPE[1], 3 * SHAPE[0])  # ceil(sqrt(7)) = 3 tiles a side
    assert ds.SeriesNumber == 7 and ds.AcquisitionNumber == 3 and ds.InstanceNumber == 3
    assert float(ds.RepetitionTime) == 2000.0 and ds.Manufacturer == "SIEMENS"
    csa = read_csa(ds.private_block(0x0029, "SIEMENS CSA HEADER")[0x10].value)
    assert csa["NumberOfImagesInMosaic"] == ["7"]
    assert [float(v) for v in csa["SliceNormalVector"]] == [0.0, 0.0, 1.0]
    assert csa["AcquisitionMatrixText"] == ["12p*10"]
    phoenix = read_csa(ds.private_block(0x0029, "SIEMENS CSA HEADER")[0x20].value)["MrPhoenixProtocol"][0]
    assert "sSliceArray.lSize = 7" in phoenix


@pytest.mark.filterwarnings(NICOM_WARNING)
def test_nibabel_csa_reader_agrees(tmp_path):
    from nibabel.nicom import csareader

    path = write_volume(make_volume(3), AFFINES["las"], tmp_path / "m.dcm", "mosaic", acquisition=3, tr=2.0)[0]
    csa = csareader.get_csa_header(pydicom.dcmread(path))
    assert csareader.is_mosaic(csa) and csareader.get_n_mosaic(csa) == SHAPE[2]
    assert np.allclose(csareader.get_slice_normal(csa), [0, 0, 1])


def test_series_identity_is_deterministic_and_instances_unique(tmp_path):
    a = pydicom.dcmread(
        write_volume(make_volume(1), AFFINES["ras"], tmp_path / "a.dcm", "mosaic", acquisition=1, tr=2.0)[0]
    )
    b = pydicom.dcmread(
        write_volume(make_volume(2), AFFINES["ras"], tmp_path / "b.dcm", "mosaic", acquisition=2, tr=2.0)[0]
    )
    c = pydicom.dcmread(
        write_volume(
            make_volume(1), AFFINES["ras"], tmp_path / "c.dcm", "mosaic", acquisition=1, tr=2.0, series_number=2
        )[0]
    )
    assert a.SeriesInstanceUID == b.SeriesInstanceUID != c.SeriesInstanceUID
    assert a.StudyInstanceUID == c.StudyInstanceUID and a.SOPInstanceUID != b.SOPInstanceUID
    assert a.file_meta.MediaStorageSOPInstanceUID == a.SOPInstanceUID


def test_enhanced_and_slices_fields(tmp_path):
    ds = pydicom.dcmread(
        write_volume(make_volume(1), AFFINES["ras"], tmp_path / "e.dcm", "enhanced", acquisition=4, tr=1.5)[0]
    )
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4.1" and ds.NumberOfFrames == SHAPE[2]
    frames = ds.PerFrameFunctionalGroupsSequence
    assert [f.FrameContentSequence[0].InStackPositionNumber for f in frames] == list(range(1, SHAPE[2] + 1))
    assert float(ds.SharedFunctionalGroupsSequence[0].MRTimingAndRelatedParametersSequence[0].RepetitionTime) == 1500.0
    paths = write_volume(
        make_volume(1), AFFINES["ras"], tmp_path / "s", "slices", acquisition=4, tr=1.5, vendor="philips"
    )
    assert paths == slice_paths(tmp_path / "s", SHAPE[2]) and paths[0].name == "s_s0001.dcm"
    first = pydicom.dcmread(paths[0])
    assert (
        first.ImagesInAcquisition == SHAPE[2] and first.TemporalPositionIdentifier == 4 and first.AcquisitionNumber == 1
    )
    assert first.InstanceNumber == 3 * SHAPE[2] + 1
    assert float(first.private_block(0x2005, "Philips MR Imaging DD 001")[0x0E].value) == 2.0


def test_writer_refuses_what_dicom_cannot_hold(tmp_path):
    sheared = AFFINES["ras"].copy()
    sheared[0, 1] = 1.0
    with pytest.raises(ValueError, match="sheared"):
        write_volume(make_volume(1), sheared, tmp_path / "x.dcm", "mosaic", acquisition=1, tr=2.0)
    nib.Nifti1Image(make_volume(1), sheared)  # NIfTI holds it
    write_volume(make_volume(1), sheared, tmp_path / "x.nii", "nifti", acquisition=1, tr=2.0)
    np.testing.assert_allclose(read_volume(tmp_path / "x.nii").affine, sheared)
    with pytest.raises(ValueError, match="Siemens"):
        write_volume(
            make_volume(1), AFFINES["ras"], tmp_path / "y.dcm", "mosaic", acquisition=1, tr=2.0, vendor="philips"
        )
    with pytest.raises(ValueError, match="fmt"):
        write_volume(make_volume(1), AFFINES["ras"], tmp_path / "y.dcm", "analyze", acquisition=1, tr=2.0)
    with pytest.raises(ValueError, match="3-D"):
        write_volume(np.zeros((4, 4, 4, 2)), AFFINES["ras"], tmp_path / "y.nii", "nifti", acquisition=1, tr=2.0)
