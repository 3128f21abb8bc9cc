"""Live least-squares-separate trials (TrialBook with an lss spec): each trial estimated once its lag is in, on the
run's volumes so far, equal to the offline form on the same truncated run (the same code)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd

from offline.decoding.estimates import lss_patterns
from service.live.history import VolumeHistory
from service.live.trials import TrialBook
from service.lss import LSSOptions, ready_volume
from service.preprocess import PreprocessSpec
from tests.offline.test_estimates import _synthetic_run


class _Decoder:
    def __init__(self):
        self.bundle = SimpleNamespace(latent_size=3, image_shape=(2, 2, 3))
        self.estimates: list[np.ndarray] = []

    def latent(self, est, out):
        self.estimates.append(np.array(est))
        return out

    def decode(self, latent):
        return np.zeros((2, 2, 3), np.uint8)


class _Outputs:
    def trial(self, header, image):
        header["t"]["sent"] = 0.0
        return 0


def _book(rr, spec):
    decoder = _Decoder()
    runlog = SimpleNamespace(run_id="r", trial=lambda row, latent: 0, feedback=lambda line: None, event=lambda h: None)
    book = TrialBook(
        rr.run.tr,
        SimpleNamespace(skip_trial_types=("Fix",), latent_in_header=0),
        decoder,
        VolumeHistory(rr.x.shape[1], capacity=16),
        None,  # the online detrending: not used by LSS
        SimpleNamespace(trial=lambda latent: {"value": None}),
        runlog,
        _Outputs(),
        lambda: None,
        window=spec,
    )
    return book, decoder


def test_live_lss_equals_the_offline_form_on_the_run_so_far(rng):
    rr, _ = _synthetic_run(rng)
    rr.motion = np.cumsum(rng.normal(0, 0.05, (rr.n_volumes, 6)), axis=0)
    censored = np.zeros(rr.n_volumes, bool)
    censored[[12, 13, 70]] = True
    rr.qa = [{"censored": bool(c)} for c in censored]
    spec = PreprocessSpec(estimate="lss", lss=LSSOptions(lag=11.0))
    book, decoder = _book(rr, spec)
    ev = rr.run.events
    for i, row in ev.iterrows():  # the events.tsv, read at start
        h = {"kind": "onset", "trial": i, "onset": row["onset"], "duration": row["duration"]}
        book.event({**h, "trial_type": row["trial_type"], "stim_id": row["stim_file"] or ""}, record=False)
    lasts = []
    for k in range(rr.n_volumes):
        book.history.store(k, rr.x[k], rr.motion[k], np.zeros(rr.x.shape[1], np.float32), censored=bool(censored[k]))
        before = len(decoder.estimates)
        book.advance(k, publish=False)
        assert len(decoder.estimates) == before  # estimated after the frame, by flush
        book.flush()
        lasts += [k] * (len(decoder.estimates) - before)
    faces = ev.index[ev["trial_type"] == "train_face"]
    expected = [ready_volume(ev.loc[i, "onset"], 2.0, 11.0) for i in faces]
    expected = [v for v in expected if v < rr.n_volumes]
    assert lasts == expected and book.pending == len(faces) - len(expected)
    whole, whole_rows = lss_patterns(rr, ["train_face"], spec)
    r_whole = []
    for est, last, i in zip(decoder.estimates, lasts, faces):
        x, rows = lss_patterns(rr, ["train_face"], spec, n_volumes=last + 1)
        at = int(np.flatnonzero(rows["onset"].to_numpy() == ev.loc[i, "onset"])[0])
        np.testing.assert_array_equal(est, x[at])  # the same code on the same data: the same numbers
        at = int(np.flatnonzero(whole_rows["onset"].to_numpy() == ev.loc[i, "onset"])[0])
        r_whole.append(np.corrcoef(est, whole[at])[0, 1])
    # the truncation's cost: the later volumes refine the drift and the neighbours' responses
    print(f"median r live vs whole-run: {np.median(r_whole):.3f} over {len(r_whole)} trials")
    assert np.median(r_whole) > 0.5


def test_live_lss_with_events_announced_one_by_one(rng):
    """Onsets that arrive as messages (each at its time): the model holds the events announced so far, which are
    the events before the fit's last volume once the lag exceeds the announcements' delay."""
    rr, _ = _synthetic_run(rng, n_vol=80)
    spec = PreprocessSpec(estimate="lss", motion_regressors=False)
    book, decoder = _book(rr, spec)
    ev = rr.run.events
    pending = list(ev.iterrows())
    for k in range(rr.n_volumes):
        while pending and pending[0][1]["onset"] <= k * 2.0:
            i, row = pending.pop(0)
            h = {"kind": "onset", "trial": i, "onset": row["onset"], "duration": row["duration"]}
            book.event({**h, "trial_type": row["trial_type"], "stim_id": row["stim_file"] or ""}, record=False)
        book.history.store(k, rr.x[k], rr.motion[k], np.zeros(rr.x.shape[1], np.float32))
        book.advance(k)
    assert len(decoder.estimates) > 10
    last = ready_volume(ev.loc[0, "onset"], 2.0, spec.lss.lag)
    x, _ = lss_patterns(rr, ["train_face"], spec, n_volumes=last + 1)
    np.testing.assert_array_equal(decoder.estimates[0], x[0])
    assert isinstance(ev, pd.DataFrame)
