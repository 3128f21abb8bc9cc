"""Bad input at the command line and in config files: a clear message that names the file or value, never a
traceback or a hang; and a fuzzing pass (hypothesis) over the config loader and the command line, like the
readers' (issue #16). Each named case was a traceback, a hang or a silent wrong result on the old main."""

from __future__ import annotations

import dataclasses
import os
import string
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fmriface import cli
from fmriface.config import ConfigError, load_config


@pytest.fixture(autouse=True)
def _as_a_user(monkeypatch):
    monkeypatch.setenv("FMRIFACE_RAISE", "0")  # the front door: one line on stderr, exit status 1


def _run(argv, capsys) -> tuple[int, str]:
    code = cli.main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return code, err


# --- config files ------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Cfg:
    tr: float = 2.0
    n: int = 1
    name: str = "x"


def test_a_config_that_is_a_folder_a_fifo_or_not_utf8_is_refused_naming_it(tmp_path):
    with pytest.raises(ConfigError, match="is a folder"):
        load_config(_Cfg, tmp_path)
    fifo = tmp_path / "cfg.toml"
    os.mkfifo(fifo)  # opening it would block until a writer came
    with pytest.raises(ConfigError, match="not a regular file"):
        load_config(_Cfg, fifo)
    latin = tmp_path / "latin.toml"
    latin.write_bytes('name = "caf\xe9"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin.toml is not UTF-8"):
        load_config(_Cfg, latin)


@pytest.mark.parametrize("literal", ["nan", "inf", "-inf"])
def test_a_non_finite_number_in_a_config_is_refused(tmp_path, literal):
    path = tmp_path / "c.toml"
    path.write_text(f"tr = {literal}\n")
    with pytest.raises(ConfigError, match=r"key 'tr' is .*expected a finite number"):
        load_config(_Cfg, path)


def _config_classes():
    from fmriface.commands.inspect import InspectConfig
    from offline.twin import SimulateConfig
    from service.live.config import ServeConfig

    return [ServeConfig, SimulateConfig, InspectConfig]


_values = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(string.printable, max_size=12),
    st.lists(st.integers(-5, 5), max_size=4),
)


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if v != v else ("inf" if v > 0 else "-inf") if abs(v) == float("inf") else repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r") + '"'
    if isinstance(v, list):
        return "[" + ", ".join(map(str, v)) + "]"
    return str(v)


def _fuzz_config(data, tmp_path):
    cls = data.draw(st.sampled_from(_config_classes()))
    keys = [f.name for f in dataclasses.fields(cls)] + ["bogus_key", "watcher"]
    lines = []
    for key in data.draw(st.lists(st.sampled_from(keys), max_size=5, unique=True)):
        lines.append(f"{key} = {_toml_value(data.draw(_values))}")
    raw = "\n".join(lines).encode()
    if data.draw(st.booleans()):  # damage the bytes: truncation, a stray byte
        cut = data.draw(st.integers(0, len(raw)))
        raw = raw[:cut] + data.draw(st.binary(max_size=3))
    path = tmp_path / "fuzz.toml"
    path.write_bytes(raw)
    try:
        load_config(cls, path)
    except ConfigError as exc:
        assert str(path) in str(exc) or "defaults" in str(exc), exc


@settings(
    max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_fuzz_the_config_loader_gives_a_config_or_a_named_error(data, tmp_path):
    _fuzz_config(data, tmp_path)


@pytest.mark.slow
@settings(max_examples=4000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_the_config_loader_long(data, tmp_path):
    _fuzz_config(data, tmp_path)


# --- replay, inspect, display, serve ------------------------------------------------------------------------


@pytest.fixture
def run_file(tmp_path) -> Path:
    import nibabel as nib

    path = tmp_path / "sub-01_task-faces_run-01_bold.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((6, 6, 4, 5), np.float32), np.eye(4)), path)
    path.with_name("sub-01_task-faces_run-01_events.tsv").write_text("onset\tduration\ttrial_type\n0\t1\tf\n9\t1\tf\n")
    return path


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--events-to", "foo"], "--events-to 'foo' is not a ZeroMQ address"),
        (["--events-to", "tcp://127.0.0.1:72645"], "port '72645' is not a number from 1 to 65535"),
        (["--speed", "-3"], "--speed -3 must be a positive"),
        (["--speed", "0"], "--speed 0 must be a positive"),
        (["--tr", "0"], "--tr 0 must be a positive"),
        (["--max-volumes", "-1"], "--max-volumes -1 must be at least 1"),
        (["--faults", "bogus"], "unknown fault kind"),
    ],
    ids=["events-to-foo", "events-to-port", "speed-negative", "speed-0", "tr-0", "max-volumes-negative", "faults"],
)
def test_replay_refuses_bad_options_at_once(run_file, tmp_path, capsys, extra, message):
    code, err = _run(["replay", "--run", run_file, "--to", tmp_path / "scanner", *extra], capsys)
    assert code == 1 and message in err
    assert not (tmp_path / "scanner").exists()  # refused before anything was written


def test_replay_refuses_a_to_that_is_a_file(run_file, tmp_path, capsys):
    target = tmp_path / "scanner"
    target.write_text("not a folder")
    code, err = _run(["replay", "--run", run_file, "--to", target], capsys)
    assert code == 1 and "is not a folder" in err


def test_a_shortened_replay_sends_no_event_after_its_last_volume(tmp_path):
    from service.scanner.replay import ScannerEmulator

    events = [{"onset": t, "duration": 1.0, "trial_type": "f"} for t in (0.0, 4.0, 7.9, 8.0, 30.0)]
    emu = ScannerEmulator(np.ones((4, 4, 3, 4), np.float32), np.eye(4), 2.0, tmp_path, events=events)
    assert [e["onset"] for e in emu.events] == [0.0, 4.0, 7.9]  # 4 volumes of 2 s end at 8 s


def test_inspect_strict_on_an_empty_folder_fails(tmp_path, capsys):
    code, _ = _run(["inspect", tmp_path, "--strict"], capsys)
    assert code == 1
    code, _ = _run(["inspect", tmp_path], capsys)
    assert code == 0


def test_display_refuses_a_bad_address(capsys):
    code, err = _run(["display", "--sub", "foo", "--headless"], capsys)
    assert code == 1 and "--sub 'foo' is not a ZeroMQ address" in err


def test_serve_refuses_a_port_out_of_range():
    from service.live.config import ServeConfig

    with pytest.raises(ValueError, match="port '72645' is not a number from 1 to 65535"):
        ServeConfig(pub="tcp://127.0.0.1:72645")
    ServeConfig(pub="tcp://127.0.0.1:*")  # any free port, bound and read back


def test_the_demo_twin_simulates_for_every_seed():
    from fmriface.config import preset_path
    from offline.twin import SimulateConfig, prepare

    for seed in range(8):  # seed 1 gave "cannot order the test trials without accidental repeats"
        prepare(load_config(SimulateConfig, preset_path("simulate-demo"), {"seed": seed}))


_argv_parts = st.lists(
    st.one_of(
        st.sampled_from(["--speed", "--tr", "--max-volumes", "--faults", "--fault-rate", "--events-to", "--seed"]),
        st.sampled_from(["-1", "0", "nan", "inf", "1e400", "3", "tcp://x", "foo", "", "truncate,bogus"]),
        st.text(string.ascii_letters + string.digits + ":/.-", max_size=8),
    ),
    max_size=6,
)


def _fuzz_command_lines(parts, run_file, tmp_path, capsys):
    out = tmp_path / "fuzz-scanner"
    for argv in (["replay", "--run", run_file, "--to", out, "--asap", *parts], ["inspect", tmp_path, *parts]):
        try:
            code, _ = _run(argv, capsys)
        except SystemExit as exc:  # argparse's own usage error, or its help for a fuzzed -h / --he
            out = capsys.readouterr().out
            assert exc.code == 2 or (exc.code == 0 and out.startswith("usage:"))
            continue
        assert code in (0, 1)


# the default pass is derandomized (the same cases every run: no test that fails by chance); the slow pass explores.
# It found replay --seed -1 (a traceback from numpy), kept as an example.
@settings(
    max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(parts=_argv_parts)
@example(parts=["--seed", "-1"])
def test_fuzz_replay_and_inspect_command_lines_give_no_traceback(parts, run_file, tmp_path, capsys):
    _fuzz_command_lines(parts, run_file, tmp_path, capsys)


@pytest.mark.slow
@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=_argv_parts)
def test_fuzz_command_lines_long(parts, run_file, tmp_path, capsys):
    _fuzz_command_lines(parts, run_file, tmp_path, capsys)
