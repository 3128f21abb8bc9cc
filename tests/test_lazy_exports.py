"""The packages' public names are imported on first use (``lazy_loader.attach`` in each ``__init__.py``): every name
a package lists resolves, and importing one room loads no other (``docs/architecture.md``).
"""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

LAZY = [
    "service",
    "service.live",
    "service.protocol",
    "service.scanner",
    "offline",
    "offline.datasets",
    "offline.decoding",
    "offline.faces",
    "offline.facespace",
    "offline.reports",
    "offline.training",
    "offline.twin",
    "models",
    "stimulus",
]


def _loaded_after(code: str, prefixes: tuple[str, ...]) -> list[str]:
    """The modules starting with ``prefixes`` that a fresh interpreter has loaded after running ``code``."""
    probe = f"import sys\n{code}\nprint(' '.join(sorted(m for m in sys.modules if m.startswith({prefixes!r}))))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    return out.stdout.split()


@pytest.mark.parametrize("package", LAZY)
def test_every_listed_name_resolves(package):
    module = importlib.import_module(package)
    assert dir(module) == module.__all__ == sorted(module.__all__)
    missing = [name for name in module.__all__ if getattr(module, name, None) is None]
    assert not missing, f"{package} lists names it cannot give: {missing}"
    with pytest.raises(AttributeError):
        module.no_such_name  # noqa: B018


def test_the_protocol_loads_nothing_else_of_the_service():
    loaded = _loaded_after("import service.protocol as P; P.encode", ("service", "offline", "torch", "nibabel"))
    assert set(loaded) <= {"service", "service.jsonsafe", "service.protocol"} | {
        f"service.protocol.{m}" for m in ("keys", "messages", "sockets")
    }, loaded


def test_the_twin_and_the_live_records_never_pull_in_torch():
    loaded = _loaded_after(
        "import offline.twin as T; T.simulate; import service.live.runlog, service.live.onnx_session",
        ("torch", "models", "service.live."),
    )
    assert not [m for m in loaded if m.startswith(("torch", "models"))], loaded
    assert set(loaded) <= {"service.live.runlog", "service.live.onnx_session", "service.live.npy"}, loaded


def test_a_function_named_like_its_module_stays_the_function():
    """``offline.twin.simulate`` is a module and the function it defines; importing the module first must not let
    the module shadow the package's public name."""
    loaded = _loaded_after(
        "import offline.twin.simulate\nfrom offline.twin import simulate\nassert callable(simulate), simulate",
        ("offline.twin.simulate",),
    )
    assert loaded == ["offline.twin.simulate"]
