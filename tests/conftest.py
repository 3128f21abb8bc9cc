"""Shared fixtures. Tests cannot hang (global timeout in pyproject) or collide (random ports, tmp_path)."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest

# Re-raise inside the service's error policy instead of logging and going on (docs/architecture.md, the error policy).
os.environ.setdefault("FMRIFACE_RAISE", "1")
os.environ.setdefault("FMRIFACE_QUIET", "1")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def tcp_address() -> str:
    return f"tcp://127.0.0.1:{free_port()}"
