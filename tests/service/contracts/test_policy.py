"""The error policy is read in one place (``service.policy.raise_errors``): the live path, intake and the command's
front door all follow ``FMRIFACE_RAISE``."""

from __future__ import annotations

import pytest

from fmriface.cli import main
from service.live import policy as live_policy
from service.policy import raise_errors


@pytest.mark.parametrize(("value", "raises"), [("1", True), ("0", False), ("", False), ("yes", False)])
def test_only_one_raises(monkeypatch, value, raises):
    monkeypatch.setenv("FMRIFACE_RAISE", value)
    assert raise_errors() is raises


def test_unset_records_and_goes_on(monkeypatch):
    monkeypatch.delenv("FMRIFACE_RAISE", raising=False)
    assert raise_errors() is False


def test_the_live_path_asks_the_same_switch():
    assert live_policy.raise_errors is raise_errors


def test_the_front_door_follows_the_switch(monkeypatch, tmp_path, capsys):
    missing = str(tmp_path / "no-such-bundle")
    monkeypatch.setenv("FMRIFACE_RAISE", "0")
    assert main(["inspect", missing]) == 1
    assert "fmriface inspect: error:" in capsys.readouterr().err
    monkeypatch.setenv("FMRIFACE_RAISE", "1")
    with pytest.raises(FileNotFoundError):
        main(["inspect", missing])
