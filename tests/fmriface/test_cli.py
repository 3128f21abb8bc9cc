from __future__ import annotations

import subprocess
import sys

import pytest

from fmriface.cli import commands, main
from fmriface.commands.bench import benchmarks

EXPECTED = {"simulate", "faces", "train-vaegan", "encode", "fit", "export", "realign", "inspect", "serve", "replay",
            "display", "experiment", "demo", "bench"}  # fmt: skip


def test_every_designed_command_is_registered():
    missing = EXPECTED - set(commands())
    assert not missing, f"commands in docs/architecture.md not yet registered: {sorted(missing)}"


@pytest.mark.parametrize("name", sorted(commands()))
def test_each_command_explains_itself(name, capsys):
    try:
        code = main([name, "--help"])
    except SystemExit as exc:  # argparse exits after printing help
        code = exc.code
    assert code == 0
    out = capsys.readouterr().out
    assert "usage:" in out and len(out) > 200, out


def test_every_command_has_a_one_line_help():
    for name, (_, help_) in commands().items():
        assert help_ and len(help_) < 120, (name, help_)


def test_benchmarks_are_discovered_and_explain_themselves():
    names = set(benchmarks())
    assert {"motion", "service", "decoder", "intake", "train", "faces"} <= names, names
    assert all(benchmarks().values())


def test_unknown_command_is_an_error(capsys):
    assert main(["no-such-command"]) == 2
    assert "unknown command" in capsys.readouterr().err


def test_top_level_help_is_fast_and_imports_nothing_heavy():
    code = "import sys; from fmriface.cli import main; main(['--help']); print(sorted(m for m in ('torch', 'onnxruntime', 'nilearn', 'psychopy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_service_protocol_import_stays_light():
    code = "import sys, service.protocol; print(sorted(m for m in ('torch', 'onnxruntime', 'nibabel', 'offline', 'psychopy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
