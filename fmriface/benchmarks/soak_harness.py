"""Pieces of the reliability runs (soak, crash/restart, peers, privacy): the real ``fmriface serve`` in a
subprocess on a TOML config, a ZeroMQ subscriber thread that keeps every message, a synthetic run for the
scanner emulator, and the accounting of ``volumes.jsonl`` against what the emulator wrote.

The service runs with the production error policy (``FMRIFACE_RAISE`` unset: a bad volume is recorded and the
run goes on), which is what these runs test.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fmriface.common import free_address, write_toml

__all__ = [
    "ServeProcess",
    "Collector",
    "synthetic_run",
    "free_address",
    "account",
    "record_label",
    "acquisition_of_file",
]


@dataclass
class ServeProcess:
    """``python -m fmriface serve --config FILE`` with ``values`` (ServeConfig fields) written to FILE.

    ``start()`` returns at once; :meth:`rss_mb` samples the process's resident memory; :meth:`kill` sends
    SIGKILL (a crash), :meth:`terminate` SIGTERM (a clean stop).
    """

    values: dict[str, Any]
    workdir: Path
    name: str = "serve"
    proc: subprocess.Popen | None = None
    log_path: Path | None = None

    def start(self) -> ServeProcess:
        """Write the config and start the service with its output in ``<name>.log``; returns self at once."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        cfg = self.workdir / f"{self.name}.toml"
        write_toml(cfg, self.values)
        env = {**os.environ, "FMRIFACE_QUIET": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
        env.pop("FMRIFACE_RAISE", None)  # the production error policy: record, log, go on
        self.log_path = self.workdir / f"{self.name}.log"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "fmriface", "serve", "--config", str(cfg)],
                stdout=log,
                stderr=log,
                env=env,
                cwd=str(self.workdir),
            )
        return self

    @property
    def pid(self) -> int:
        """The service's process id (only once started)."""
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        """Whether the service was started and has not exited."""
        return self.proc is not None and self.proc.poll() is None

    def rss_mb(self) -> float | None:
        """The service's resident memory in MiB, or None once the process is gone."""
        import psutil

        try:
            return psutil.Process(self.pid).memory_info().rss / 2**20
        except psutil.Error:
            return None

    def kill(self) -> None:
        """Crash the service: SIGKILL, so no handler runs and nothing is flushed, then reap it."""
        if self.alive():
            self.proc.kill()  # SIGKILL: no handler runs, nothing is flushed or closed
        self.wait(10)

    def terminate(self, timeout: float = 20) -> int | None:
        """Stop the service cleanly with SIGTERM; returns its exit status (killed after ``timeout`` seconds)."""
        if self.alive():
            self.proc.terminate()
        return self.wait(timeout)

    def wait(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` seconds for the service to exit, then kill it; returns its exit status."""
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    def log(self) -> str:
        """The service's output so far (empty before it started)."""
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""


class Collector(threading.Thread):
    """A SUB socket on ``address`` in its own thread, keeping every message (and, with ``raw``, its bytes).

    ``ready`` is set by the first ``status`` heartbeat; ``ended`` by an ``end`` message.
    """

    def __init__(self, address: str, raw: bool = False, hwm: int = 1_000_000, curve: Any = None) -> None:
        super().__init__(daemon=True, name="soak-collector")
        self.address, self.keep_raw, self.hwm, self.curve = address, raw, hwm, curve
        self.messages: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.raw: list[bytes] = []
        self.malformed = 0
        self.ready, self.ended, self.stop = threading.Event(), threading.Event(), threading.Event()

    def run(self) -> None:
        """Receive until :meth:`close`: decode each message, keep it by topic and count those that do not decode."""
        import zmq

        from service import protocol

        ctx = zmq.Context()
        sub = protocol.subscriber(ctx, self.address, hwm=self.hwm, curve=self.curve)
        try:
            while not self.stop.is_set():
                if not sub.poll(50):
                    continue
                frames = sub.recv_multipart()
                if self.keep_raw:
                    self.raw.append(b"\x00".join(frames))
                try:
                    msg = protocol.decode(frames, protocol.SERVICE_TOPICS)
                except protocol.ProtocolError:
                    self.malformed += 1
                    continue
                self.messages[msg.topic].append({**msg.header, "_received": msg.received})
                if msg.topic == "status":
                    self.ready.set()
                elif msg.topic == "end":
                    self.ended.set()
        finally:
            sub.close(linger=0)
            ctx.term()

    def frames(self) -> list[dict[str, Any]]:
        """The ``frame`` messages received so far, in order of arrival."""
        return list(self.messages["frame"])

    def close(self) -> None:
        """Stop receiving and wait up to 5 s for the thread to end."""
        self.stop.set()
        self.join(5)


def synthetic_run(reference: np.ndarray, n_volumes: int, seed: int = 0, noise: float = 4.0) -> np.ndarray:
    """A run [X, Y, Z, T] float32: the bundle's reference, a slow drift, noise, and the index in voxel 0."""
    rng = np.random.default_rng(seed)
    data = np.empty((*reference.shape, n_volumes), np.float32)
    brain = (reference > 100).astype(np.float32)
    for t in range(n_volumes):
        vol = reference + (10.0 * np.sin(t / 50.0)) * brain
        vol = vol + rng.standard_normal(reference.shape, dtype=np.float32) * noise
        data[..., t] = vol
    data[0, 0, 0, :] = np.arange(n_volumes) % 30000  # the index, so mix-ups are visible in the data
    return data


_ACQ_IN_NAME = re.compile(r"^\d{3}_\d{6}_(\d{6})")


def acquisition_of_file(name: str | None) -> int | None:
    """Acquisition number from a scanner export file name (``001_000001_000012.dcm`` -> 12), or None."""
    m = _ACQ_IN_NAME.match(name or "")
    return int(m.group(1)) if m else None


def record_label(rec: dict[str, Any]) -> str:
    """``ok``, ``error`` or the intake kind of a skipped volume (``gap``, ``incomplete``, ``corrupt``, ...)."""
    status = str(rec.get("status", "?"))
    if status == "skipped":
        return str(rec.get("error", "skipped")).split(":", 1)[0]
    return status


def _acquisitions_of(rec: dict[str, Any]) -> list[int]:
    if rec.get("acquisitions"):
        return [int(a) for a in rec["acquisitions"]]
    if rec.get("acquisition") is not None:
        return [int(rec["acquisition"])]
    acq = acquisition_of_file(rec.get("file"))
    return [acq] if acq is not None else []


#: What each injected fault may end as in ``volumes.jsonl`` (besides the record of a gap it leaves).
_EXPECTED = {
    None: {"ok"},
    "delay": {"ok", "late"},
    "reorder": {"ok", "late"},
    "duplicate": {"ok"},
    "drop": {"gap"},
    "truncate": {"incomplete", "gap"},
    "corrupt": {"corrupt", "gap"},
    # signal faults (service.scanner.signal): a zero volume is refused (recorded as an error); the others are
    # decoded and recorded ok, censored by the QA (their ``qa`` says so: ``signal_report``)
    "zero": {"error"},
    "spike": {"ok"},
    "slice-spike": {"ok"},
    "slice-dropout": {"ok"},
    "step": {"ok"},
}


@dataclass
class Accounting:
    """Every acquisition written (or dropped) by the emulator against what ``volumes.jsonl`` says of it."""

    n_volumes: int
    labels: dict[int, list[str]] = field(default_factory=dict)
    per_status: Counter = field(default_factory=Counter)
    unaccounted: list[int] = field(default_factory=list)
    unexpected: list[tuple[int, str | None, list[str]]] = field(default_factory=list)
    ok_twice: list[int] = field(default_factory=list)
    duplicates_recorded: int = 0
    unattributed: list[str] = field(default_factory=list)

    @property
    def accounted(self) -> bool:
        return not (self.unaccounted or self.unexpected or self.ok_twice)

    def summary(self) -> dict[str, Any]:
        return {
            "accounted": self.accounted,
            "per_status": dict(sorted(self.per_status.items())),
            "unaccounted": self.unaccounted[:20],
            "n_unaccounted": len(self.unaccounted),
            "unexpected": [list(u) for u in self.unexpected[:20]],
            "ok_twice": self.ok_twice[:20],
            "duplicate_records": self.duplicates_recorded,
            "records_without_acquisition": self.unattributed[:10],
        }


def account(records: list[dict[str, Any]], n_volumes: int, faults: dict[int, str], first: int = 1) -> Accounting:
    """Match records to acquisitions ``first .. first + n_volumes - 1``; ``faults`` maps acquisition -> kind."""
    acc = Accounting(n_volumes)
    by_acq: dict[int, list[str]] = defaultdict(list)
    for rec in records:
        label = record_label(rec)
        acc.per_status[label] += 1
        acqs = _acquisitions_of(rec)
        if not acqs:
            acc.unattributed.append(f"{label}: {rec.get('error', '')}"[:160])
            continue
        for a in acqs:
            by_acq[a].append(label)
    for a in range(first, first + n_volumes):
        labels = by_acq.get(a, [])
        acc.labels[a] = labels
        if not labels:
            acc.unaccounted.append(a)
            continue
        kind = faults.get(a)
        if kind == "duplicate":
            acc.duplicates_recorded += labels.count("duplicate")
            labels = [x for x in labels if x != "duplicate"]
        if labels.count("ok") > 1:
            acc.ok_twice.append(a)
        if not set(labels) <= _EXPECTED[kind] or not labels:
            acc.unexpected.append((a, kind, by_acq.get(a, [])))
    return acc


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_until(predicate, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
