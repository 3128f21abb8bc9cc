"""Fixtures of the dashboard's tests: one headless Chromium per module, skipped with the reason where it is missing."""

from __future__ import annotations

import pytest

from tests.dashboard.live import Browser, browser_missing, make_face_bundle


@pytest.fixture(scope="module")
def browser():
    reason = browser_missing()
    if reason:
        pytest.skip(reason)
    b = Browser()
    yield b
    b.close()


@pytest.fixture(scope="session")
def face_bundle(tmp_path_factory):
    return make_face_bundle(tmp_path_factory.mktemp("face-bundle"))
