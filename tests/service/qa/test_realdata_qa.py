"""False positives of the QA on real runs (issue 27): the scanner exports of ``tests/data/scanner-data`` (the same
files as ``../shared/scanner-data``), read by dcm2niix (an independent reader; ``tests/service/realdata.py``), and
nibabel's ``example4d``, through ``fmriface realign`` (motion correction and the service's QA, ``confounds.tsv``).

What can be checked depends on the run's length. The Siemens XA30 interoperability reference holds the whole BOLD
run (20 volumes, TR 1 s): past the ``warmup`` of 5 volumes every check runs (std DVARS, slice z, outliers), and at
most 1% of its volumes may be censored, so none. The others hold 2-5 volumes (GE epiRT 3, XA30 enhanced 5, E11
mosaic 2, example4d 2): too few for the running estimates (std DVARS needs 2 volume pairs and then ``warmup``
pairs, the slice and outlier checks ``warmup`` volumes), so only the refusal (zero / constant), the reference-ratio
and the global-jump checks apply: no volume refused, none censored.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from service.qa import QAConfig
from tests.service.realdata import SERIES, reference_volumes


def _realign(data: np.ndarray, affine: np.ndarray, tmp_path: Path, capsys) -> tuple[dict, np.ndarray]:
    from fmriface.commands import realign

    bold = tmp_path / "run_bold.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(data, np.float32), affine), bold)
    assert realign.main([str(bold), "--out", str(tmp_path / "out"), "--json"]) == 0  # no volume refused
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    table = np.genfromtxt(tmp_path / "out" / "confounds.tsv", delimiter="\t", names=True, missing_values="n/a")
    return summary, table


@pytest.mark.parametrize("series", SERIES, ids=[s.name for s in SERIES])
def test_no_real_scanner_volume_is_censored(series, tmp_path, capsys):
    data, affine = reference_volumes(series, tmp_path)
    assert data.shape[3] >= series.volumes
    summary, table = _realign(data, affine, tmp_path, capsys)
    assert summary["censored_volumes"] == []
    assert len(table) == data.shape[3] and not table["censored"].any()
    checked = np.isfinite(table["std_dvars"]).sum()
    top = np.nanmax(table["std_dvars"]) if checked else float("nan")
    print(f"\n{series.name}: {data.shape[3]} volumes, none censored; std DVARS at {checked}, max {top:.2f}")
    if data.shape[3] >= 2 * QAConfig().warmup + 2:  # the whole run: every check has run
        assert checked >= data.shape[3] - 3


def test_no_volume_of_nibabels_example4d_is_censored(tmp_path, capsys):
    from nibabel.testing import data_path

    img = nib.load(Path(data_path) / "example4d.nii.gz")
    assert img.shape[3] == 2  # the reference and global-jump checks only
    summary, table = _realign(np.asarray(img.dataobj), img.affine, tmp_path, capsys)
    assert summary["censored_volumes"] == [] and not table["censored"].any()
