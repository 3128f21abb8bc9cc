"""The scanner emulator: replays a recorded or simulated run into a folder, as the scanner would export it.

:class:`ScannerEmulator` is a player with the scanner's interface (``start()``/``stop()``, a context manager).
Volume ``k`` (0-based) is written at the absolute time ``t0 + k * TR / speed`` -- never ``sleep(TR - elapsed)``,
so a slow write never shifts the later volumes -- or back to back with ``asap``. Files go through the intake
writers (:func:`service.scanner.writers.write_volume`), atomically or in chunks, and are named as a Siemens real-time
export names them (``001_000005_000012.dcm``: session, series, acquisition).

Faults, each drawn per volume with probability ``fault_rate`` (seeded), exercise the service's intake:

==============  =====================================================================================
``truncate``    only the first part of the file is written, and it is never completed
``corrupt``     the file is complete but its header bytes are garbage
``drop``        the volume is never written (a gap in acquisition numbers)
``reorder``     the volume is written after the next one
``duplicate``   the volume is written twice (a second file with the same acquisition number)
``delay``       the volume is written late (``delay_trs`` TRs after its slot)
==============  =====================================================================================

Signal faults (``signal_faults``, :class:`service.scanner.signal.SignalFaults`: ``spike``, ``slice-spike``,
``slice-dropout``, ``zero``, ``step``) change the data of a volume before it is written, so every format carries
them; see :mod:`service.scanner.signal` for their sizes and what is written.

Every fault injected is listed in ``<out_dir>_faults.tsv`` beside the watched folder (and in
:attr:`ScannerEmulator.injected`): ``volume``, ``acquisition``, ``fault``, ``file``, and when the replay injected
signal faults also ``slice`` (slice faults), ``magnitude`` (the factor) and ``quantum`` (the value of one stored
unit of that volume: the DICOM rescale slope, 0 for float32 NIfTI), ``n/a`` where they do not apply.
The emulator can also replay the run's events (``events.tsv`` rows) to the service as ``event`` messages at
their times, and announces the trigger time of the first volume, so the service's trial mode works in
simulation exactly as in the scanner.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from service import protocol
from service.scanner import signal
from service.scanner.signal import SIGNAL_FAULT_KINDS, SignalFault, SignalFaults
from service.scanner.writers import FORMATS, write_bytes, write_volume

__all__ = ["FAULT_KINDS", "SIGNAL_FAULT_KINDS", "ReplayFault", "ScannerEmulator", "SignalFaults", "volume_file_name"]

FAULT_KINDS = ("truncate", "corrupt", "drop", "reorder", "duplicate", "delay")


@dataclass(frozen=True)
class ReplayFault:
    """One fault the emulator injected: the volume (0-based index in the run), its acquisition number, the kind,
    the file; for a signal fault also the slice (slice faults), the factor and the volume's stored quantum."""

    volume: int
    acquisition: int
    kind: str
    path: str = ""
    slice: int | None = None
    magnitude: float | None = None
    quantum: float | None = None


def volume_file_name(fmt: str, acquisition: int, series_number: int = 1) -> str:
    """The file name (or, for ``slices``, the file-name prefix) a scanner export gives a volume."""
    stem = f"001_{series_number:06d}_{acquisition:06d}"
    return f"{stem}.nii" if fmt == "nifti" else stem if fmt == "slices" else f"{stem}.dcm"


@dataclass
class _Job:
    """A volume to write: when (seconds after t0), which, and how."""

    due: float
    volume: int
    fault: str | None = None
    copy: int = 0


@dataclass
class ScannerEmulator:
    """Replay ``data`` [X, Y, Z, T] into ``out_dir`` at TR pace (see the module docstring).

    Parameters
    ----------
    data : array [X, Y, Z, T]
    affine : array 4x4
    tr : float
        Repetition time of the run (s); the pace is ``tr / speed``.
    out_dir : path
        The folder the service watches.
    fmt : {"mosaic", "enhanced", "slices", "nifti"}
    vendor : {"siemens", "ge", "philips"}
        Whose export to write (``slices``: Siemens XA interoperability, GE real-time EPI or Philips classic;
        ``enhanced``: Siemens XA or Philips; see :func:`service.scanner.writers.write_volume`).
    speed : float
        Pace factor (2 = twice as fast as the scanner). Ignored with ``asap``.
    asap : bool
        Write every volume as soon as the previous one is written.
    faults : sequence of str
        Fault kinds to inject (see :data:`FAULT_KINDS`), each volume at most one.
    fault_rate : float
        Probability that a volume gets a fault.
    chunked : bool
        Write every file in chunks (a partial file is visible for a moment), as slow network shares do.
    events : sequence of dict, optional
        Rows of the run's ``events.tsv`` (``onset``, ``duration``, ``trial_type``, ``stim_file``); sent as
        ``event`` messages to ``event_address`` at ``t0 + onset / speed``, after a ``trigger`` event at t0.
    seed : int
    signal_faults : SignalFaults, optional
        Signal faults to apply to the data (see :mod:`service.scanner.signal`); a volume drawn by rate gets at
        most one fault, file or signal.
    series_number : int
    start_volume : int
        First volume to write (to continue an interrupted replay).
    """

    data: np.ndarray
    affine: np.ndarray
    tr: float
    out_dir: Path
    fmt: str = "mosaic"
    vendor: str = "siemens"
    speed: float = 1.0
    asap: bool = False
    faults: Sequence[str] = ()
    fault_rate: float = 0.0
    chunked: bool = False
    events: Sequence[dict[str, Any]] | None = None
    event_address: str | None = None
    seed: int = 0
    series_number: int = 1
    start_volume: int = 0
    delay_trs: float = 1.5
    scale_to_int16: bool = True
    patient: dict[str, str] | None = None
    signal_faults: SignalFaults | None = None
    written: list[tuple[int, float, list[Path]]] = field(default_factory=list, init=False)
    injected: list[ReplayFault] = field(default_factory=list, init=False)
    trigger_time: float | None = field(default=None, init=False)
    error: BaseException | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.data = np.asarray(self.data)
        if self.data.ndim != 4:
            raise ValueError(f"replay needs a 4-D run [X, Y, Z, T], got shape {self.data.shape}")
        if self.fmt not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, not {self.fmt!r}")
        if self.vendor not in ("siemens", "ge", "philips") or (self.fmt == "mosaic" and self.vendor != "siemens"):
            raise ValueError(
                f"vendor {self.vendor!r} cannot write {self.fmt} (mosaic: siemens; others: siemens, ge, philips)"
            )
        unknown = sorted(set(self.faults) - set(FAULT_KINDS))
        if unknown:
            raise ValueError(f"unknown fault kind(s) {unknown}; known: {', '.join(FAULT_KINDS)}")
        if not 0.0 <= self.fault_rate <= 1.0:
            raise ValueError(f"fault_rate must be in [0, 1], got {self.fault_rate}")
        if not (np.isfinite(self.tr) and np.isfinite(self.speed)) or self.tr <= 0 or self.speed <= 0:
            raise ValueError(f"tr and speed must be positive (tr={self.tr}, speed={self.speed})")
        if self.event_address is not None:
            protocol.check_address(self.event_address, "the event address")
        if self.events is not None:  # a run cut short (max_volumes) gets no events after its last volume
            end = self.n_volumes * self.tr
            self.events = [e for e in self.events if float(e["onset"]) < end]
        self.out_dir = Path(self.out_dir)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ctx: Any = None
        self._push: Any = None
        self._signal: dict[int, SignalFault] | None = None
        self._gains: np.ndarray | None = None

    # -- player interface ---------------------------------------------------------------------------------

    @property
    def n_volumes(self) -> int:
        """Number of volumes the emulator writes (the run's last axis)."""
        return int(self.data.shape[3])

    @property
    def period(self) -> float:
        """Seconds between volumes (0 with ``asap``)."""
        return 0.0 if self.asap else self.tr / self.speed

    def start(self) -> ScannerEmulator:
        """Start writing in a background thread; returns self."""
        if self._thread is not None:
            raise RuntimeError("this emulator was already started")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name="scanner-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop writing (the volume being written is finished) and wait for the thread."""
        self._stop.set()
        self.wait()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the whole run is written (or stopped); True when finished. Re-raises a writer error."""
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                return False
        if self.error is not None:
            raise self.error
        return True

    def __enter__(self) -> ScannerEmulator:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- schedule -----------------------------------------------------------------------------------------

    def plan(self) -> list[_Job]:
        """The write schedule with its faults, deterministic from the seed (sorted by due time)."""
        rng = np.random.default_rng(self.seed)
        jobs: list[_Job] = []
        kinds = list(self.faults)
        step = self.period if not self.asap else 1.0  # with asap, due times only order the writes
        for k in range(self.start_volume, self.n_volumes):
            slot = (k - self.start_volume) * step
            fault = None
            if kinds and rng.random() < self.fault_rate:
                fault = kinds[int(rng.integers(len(kinds)))]
            if fault == "reorder" and k + 1 >= self.n_volumes:
                fault = None  # nothing to swap with
            if fault == "reorder":
                jobs.append(_Job(slot + step * 1.5, k, "reorder"))
            elif fault == "delay":
                jobs.append(_Job(slot + step * self.delay_trs, k, "delay"))
            elif fault == "duplicate":
                jobs.append(_Job(slot, k, "duplicate"))
                jobs.append(_Job(slot + 1e-4, k, "duplicate", copy=1))
            else:
                jobs.append(_Job(slot, k, fault))
        jobs.sort(key=lambda j: (j.due, j.volume, j.copy))
        return jobs

    def signal_plan(self) -> dict[int, SignalFault]:
        """The signal faults by volume, deterministic from the seed (empty without ``signal_faults``)."""
        if self._signal is None:
            sf = self.signal_faults
            if sf is None or not sf.active:
                self._signal = {}
            else:
                busy = {j.volume for j in self.plan() if j.fault is not None}
                self._signal = sf.plan(self.data, self.seed, self.start_volume, busy)
            self._gains = signal.gains(self._signal, self.n_volumes)
        return self._signal

    def _run(self) -> None:
        try:
            self._run_inner()
        except BaseException as exc:  # noqa: BLE001 - handed to wait()
            self.error = exc
        finally:
            if self._push is not None:
                self._push.close(linger=500)  # let the last events leave
            if self._ctx is not None:
                self._ctx.term()

    def _run_inner(self) -> None:
        jobs = self.plan()
        self.signal_plan()
        events = sorted(self.events or (), key=lambda e: float(e["onset"]))
        push = None
        if self.event_address and self.events is not None:
            import zmq

            self._ctx = zmq.Context()
            push = self._push = protocol.pusher(self._ctx, self.event_address)
        scale = self._int16_scale()
        t0 = time.time() + 0.05
        self.trigger_time = t0
        if push is not None:
            protocol.send(push, "event", protocol.event_header("trigger", 0, trigger_time=t0, tr=self.tr))
        ev_i, ev_seq = 0, 1
        for job in jobs:
            due = t0 + job.due
            # events whose time comes before this volume's slot go out first, each at its own time
            while push is not None and ev_i < len(events) and self._event_time(t0, events[ev_i]) <= due:
                if not self._sleep_until(self._event_time(t0, events[ev_i])):
                    return
                self._send_event(push, ev_seq, events[ev_i], ev_i)
                ev_i, ev_seq = ev_i + 1, ev_seq + 1
            if not self._sleep_until(t0 if self.asap else due):
                return
            self._write(job, scale)
        while push is not None and ev_i < len(events):
            if not self._sleep_until(self._event_time(t0, events[ev_i])):
                return
            self._send_event(push, ev_seq, events[ev_i], ev_i)
            ev_i, ev_seq = ev_i + 1, ev_seq + 1
        self._write_fault_log()

    def _event_time(self, t0: float, ev: dict[str, Any]) -> float:
        return t0 + (0.0 if self.asap else float(ev["onset"]) / self.speed)

    def _send_event(self, push: Any, seq: int, ev: dict[str, Any], index: int) -> None:
        stim = ev.get("stim_file")
        header = protocol.event_header(
            "onset",
            seq,
            trial=index,
            onset=float(ev["onset"]),
            duration=float(ev.get("duration", 0.0)),
            trial_type=str(ev.get("trial_type", "")),
            stim_id=None if stim in (None, "n/a", "") or (isinstance(stim, float) and np.isnan(stim)) else str(stim),
        )
        protocol.send(push, "event", header)

    def _sleep_until(self, when: float) -> bool:
        """Sleep until the absolute time ``when``; False if stopped meanwhile."""
        while True:
            left = when - time.time()
            if left <= 0:
                return not self._stop.is_set()
            if self._stop.wait(min(left, 0.05)):
                return False

    def _int16_scale(self) -> float | None:
        if not self.scale_to_int16 or self.fmt == "nifti":
            return None
        peak = float(np.abs(self.data).max()) or 1.0
        return 1.0 if peak <= 32000 and np.allclose(self.data[..., 0], np.rint(self.data[..., 0])) else 32000.0 / peak

    def _write(self, job: _Job, scale: float | None) -> None:
        k = job.volume
        acq = k + 1
        vol = np.asarray(self.data[..., k], dtype=np.float32)
        if scale is not None and scale != 1.0:
            vol = np.rint(vol * scale)
        sig = self.signal_plan().get(k)
        if sig is not None or self._gains[k] != 1.0:
            integral = self.fmt != "nifti" and bool(np.all(vol == np.rint(vol)))
            vol = signal.apply(vol, sig, float(self._gains[k]), integral)
        name = volume_file_name(self.fmt, acq, self.series_number)
        if job.copy:
            name = name.replace(f"{acq:06d}", f"{acq:06d}_dup")
        target = self.out_dir / name
        fault = job.fault
        if sig is not None and not job.copy:
            self._record_signal(sig, acq, target, vol)
        if fault == "drop":
            self._record(job, acq, target)
            return
        if fault in ("truncate", "corrupt"):
            staging = self.out_dir.parent / f".{self.out_dir.name}.staging"
            files = write_volume(
                vol,
                self.affine,
                staging / name,
                self.fmt,
                acquisition=acq,
                tr=self.tr,
                series_number=self.series_number,
                patient=self.patient,
                vendor=self.vendor,
            )
            for f in files:
                blob = f.read_bytes()
                f.unlink()
                if fault == "truncate":
                    blob = blob[: max(1, len(blob) // 2)]
                else:
                    rng = np.random.default_rng(self.seed + acq)
                    head = bytearray(blob)
                    n = min(len(head), 512)
                    head[:n] = rng.integers(0, 256, size=n, dtype=np.uint8).tobytes()
                    blob = bytes(head)
                write_bytes(self.out_dir / f.name, blob)
            self._record(job, acq, target)
            self.written.append((k, time.time(), [self.out_dir / f.name for f in files]))
            return
        files = write_volume(
            vol,
            self.affine,
            target,
            self.fmt,
            acquisition=acq,
            tr=self.tr,
            series_number=self.series_number,
            chunked=self.chunked,
            patient=self.patient,
            vendor=self.vendor,
        )
        if fault is not None and not job.copy:
            self._record(job, acq, target)
        self.written.append((k, time.time(), files))

    def _record(self, job: _Job, acq: int, target: Path) -> None:
        self.injected.append(ReplayFault(job.volume, acq, job.fault or "", str(target.name)))

    def _record_signal(self, sig: SignalFault, acq: int, target: Path, vol: np.ndarray) -> None:
        quantum = 0.0
        if self.fmt != "nifti":  # the value of one stored unit, as the writers will store this volume
            from service.dicom.build import to_stored

            stored = to_stored(vol, self.vendor)
            quantum = 1.0 / stored.philips_ss if stored.philips_ss else stored.slope
        self.injected.append(ReplayFault(sig.volume, acq, sig.kind, target.name, sig.slice, sig.magnitude, quantum))

    def _write_fault_log(self) -> None:
        if not self.injected:
            return
        lines = ["volume\tacquisition\tfault\tfile"]
        if any(f.kind in SIGNAL_FAULT_KINDS for f in self.injected):  # the file-fault log keeps its columns
            lines[0] += "\tslice\tmagnitude\tquantum"
            lines += [f"{f.volume}\t{f.acquisition}\t{f.kind}\t{f.path}\t{_na(f.slice)}\t{_na(f.magnitude)}"
                      f"\t{_na(f.quantum)}" for f in self.injected]  # fmt: skip
        else:
            lines += [f"{f.volume}\t{f.acquisition}\t{f.kind}\t{f.path}" for f in self.injected]
        (self.out_dir.parent / f"{self.out_dir.name}_faults.tsv").write_text("\n".join(lines) + "\n")


def _na(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.10g}"
