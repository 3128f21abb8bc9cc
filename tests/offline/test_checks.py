"""check_inputs: every input of a fit checked before the first expensive step, every problem named at once."""

from __future__ import annotations

import gzip
import time

import pandas as pd
import pytest

from offline.datasets.checks import check_inputs
from tests.offline.test_bids import bids_root  # noqa: F401 - the tiny data set, a fixture

F1 = "sub-01/ses-01/func"
F2 = "sub-01/ses-02/func"


def test_a_valid_data_set_has_no_problems(bids_root):  # noqa: F811
    assert check_inputs(bids_root) == []


def test_every_problem_is_named_at_once(bids_root):  # noqa: F811
    root = bids_root
    # a missing stimulus, a truncated compressed run, an events table with a bad onset and a face without stimulus
    (root / "stimuli" / "train" / "train_00001.png").unlink()
    bold = root / F1 / "sub-01_ses-01_task-faces_run-02_bold.nii.gz"
    raw = bold.read_bytes()
    bold.write_bytes(raw[: len(raw) // 2])
    events = root / F2 / "sub-01_ses-02_task-faces_run-01_events.tsv"
    ev = pd.read_csv(events, sep="\t", keep_default_na=False).astype(str)
    ev.loc[0, "onset"] = "soon"
    ev.loc[2, "stim_file"] = "n/a"
    ev.to_csv(events, sep="\t", index=False)
    problems = check_inputs(root)
    text = "\n".join(problems)
    assert "train/train_00001.png" in text and "not found" in text
    assert f"{bold} is truncated or damaged" in text
    assert f"{events}: onset is not a finite number on line 2" in text
    assert f"{events}: no stim_file on line 4" in text
    assert len(problems) == 4, problems


def test_an_uncompressed_truncated_run_a_3d_image_and_a_missing_column(bids_root):  # noqa: F811
    root = bids_root
    gz = root / F1 / "sub-01_ses-01_task-faces_run-01_bold.nii.gz"
    nii = gz.with_name(gz.name.removesuffix(".gz"))
    data = gzip.decompress(gz.read_bytes())
    nii.write_bytes(data[: len(data) - 100])
    gz.unlink()
    events = root / F2 / "sub-01_ses-02_task-imagery_run-02_events.tsv"
    events.write_text("onset\ttrial_type\n0\tImg\n")
    problems = check_inputs(root)
    assert any(p.startswith(f"{nii} is truncated:") for p in problems), problems
    assert any("lacks the column duration" in p for p in problems), problems


def test_fit_prepare_refuses_at_once_naming_every_problem(bids_root):  # noqa: F811
    from offline.datasets.bids import BidsError
    from offline.fit import FitConfig, prepare

    (bids_root / "stimuli" / "test" / "test_00.png").unlink()
    bold = bids_root / F2 / "sub-01_ses-02_task-faces_run-01_bold.nii.gz"
    bold.write_bytes(bold.read_bytes()[:200])
    t0 = time.perf_counter()
    with pytest.raises(BidsError, match=r"2 problem\(s\) in the fit's inputs") as err:
        prepare(FitConfig(), bids_root, log=lambda _: None)
    assert time.perf_counter() - t0 < 5.0
    assert "test/test_00.png" in str(err.value) and str(bold) in str(err.value)
