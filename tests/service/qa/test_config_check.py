"""The QA thresholds online and offline: the fit records its QAConfig in the bundle's manifest, and serve warns at
start when its ``[qa]`` differs (``service.live.startup.check_qa_config``)."""

from __future__ import annotations

import logging
from types import SimpleNamespace

from service.live.config import ServeConfig
from service.live.startup import check_qa_config
from service.qa import QAConfig


def _bundle(qa):
    return SimpleNamespace(manifest={} if qa is None else {"qa": qa})


def test_serve_warns_when_its_qa_differs_from_the_fit(caplog):
    cfg = ServeConfig(qa=QAConfig(std_dvars=3.0, maps_every=5))
    with caplog.at_level(logging.WARNING, logger="service.live.serve"):
        differ = check_qa_config(cfg, _bundle(QAConfig().as_dict()))
    assert differ == ["std_dvars 3.0 (fit: 2.0)"]  # maps_every is the display's: not compared
    assert "std_dvars 3.0 (fit: 2.0)" in caplog.text and "censor differently" in caplog.text


def test_serve_says_nothing_when_they_agree_or_the_bundle_has_no_qa(caplog):
    with caplog.at_level(logging.WARNING, logger="service.live.serve"):
        assert check_qa_config(ServeConfig(), _bundle(QAConfig().as_dict())) == []
        assert check_qa_config(ServeConfig(qa=QAConfig(slice_z=10.0)), _bundle(None)) == []
    assert not caplog.records


def test_the_fit_records_the_qa_it_judged_with():
    """The fit's realignment judges with QAConfig's defaults (``iter_realigned``'s ``qa=None``): its manifest says
    so, and a serve with the defaults agrees with it."""
    from offline.fit import _manifest_fields

    ns = SimpleNamespace
    fields = _manifest_fields(
        ns(preprocess=ns(to_manifest=dict)),
        ns(tr=2.0, reference_session="01", sessions=[]),
        ns(image_size=8, stimulus_framing="full"),
        ns(alpha_=1.0, scale_=1.0),
        "ridge",
        {},
        dict.fromkeys(("pairwise", "pairwise_centred", "permutation", "chance"), 0.5),
    )
    assert fields["qa"] == QAConfig().as_dict()
    assert check_qa_config(ServeConfig(), _bundle(fields["qa"])) == []
