"""One message for an optional package that is missing: the package, what needs it and the extra to install."""

from __future__ import annotations

import sys

import pytest

from service.extras import missing_extra


def test_the_message_names_the_package_its_user_and_the_extra():
    assert missing_extra("aiohttp", "the dashboard", "dashboard") == (
        "the dashboard needs aiohttp, which is not installed: pip install -e '.[dashboard]'"
    )


def test_alternatives_and_several_extras():
    text = missing_extra("onnxruntime", "the ONNX decoder", "cpu", "gpu")
    assert text.endswith("pip install -e '.[cpu]' (or '.[gpu]')")
    assert "'.[dev,dashboard]'" in missing_extra("playwright", "the benchmark", "dev,dashboard")


def test_the_onnx_decoder_says_which_extra(monkeypatch):
    from service.live.onnx_session import OnnxSessionError, make_session

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed: importing it fails
    with pytest.raises(OnnxSessionError, match=r"needs onnxruntime, which is not installed: .*'\.\[cpu\]'"):
        make_session("decoder.onnx")


def test_the_dashboard_command_says_which_extra(monkeypatch):
    from fmriface.commands.dashboard import main
    from fmriface.common import UsageError

    monkeypatch.setitem(sys.modules, "aiohttp", None)
    with pytest.raises(UsageError, match=r"the dashboard needs aiohttp, .*pip install -e '\.\[dashboard\]'"):
        main([])
