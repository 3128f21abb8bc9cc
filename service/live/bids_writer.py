"""Every live run kept as a BIDS run: the volumes as received, their sidecar, the events, and derivatives.

A serve run writes ``sub-<s>/ses-<s>/func/sub-<s>_ses-<s>_task-<t>_run-<NN>_bold.nii.gz`` under its BIDS root
(``runs/<run_id>/bids/``, or ``--bids-out DIR``), off the hot path: the pipeline hands each volume it takes to
:meth:`BidsArchive.volume` (a queue put), and one writer thread of the archive's own writes it.

While the run is open the BOLD image is an uncompressed ``_bold.nii`` (float32, the values the pipeline got:
scaled as intake read them, on the scanner's grid, before motion correction): volume ``k`` is written at its own
place in the file and the header's time dimension is rewritten after it, so the file is a valid NIfTI holding
every volume written so far at every moment (a crash leaves at worst a torn last volume beyond what the header
counts). When the run closes, :func:`finish_bids` compresses it into ``_bold.nii.gz`` (int16 or uint16 when every
value is an integer in range, which loses nothing; else float32), writes ``_events.tsv`` from the run's records
and the derivatives (``derivatives/fmriface/``: fMRIPrep-named confounds, the decoded trial latents), and removes
the ``.nii``. A run stopped by a crash is finished by ``fmriface bids-finish RUN_DIR``; a resumed run goes on
with the same BIDS run (``bids.json`` in the run's folder names it; a finished ``.nii.gz`` is unpacked again).

The ``_bold.json`` sidecar holds RepetitionTime and TaskName and what the first file says (vendor, model,
software, field strength, echo time, flip angle, slice timing of a Siemens mosaic, phase-encoding axis), read from
a whitelist: no patient field is ever read. Labels come from the options, else from an experiment's ``trigger``
event that carries ``subject`` / ``session`` / ``run`` before the first volume, else the defaults ``sub-01``,
``ses-01``, ``task-live``: never from the watched folder's name.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import queue
import re
import threading
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "BidsArchive",
    "BidsError",
    "BidsLabels",
    "StagedNifti",
    "finish_bids",
    "sidecar_from_file",
    "DEFAULT_LABELS",
    "STATE_FILE",
]

log = logging.getLogger("service.live.bids")

#: A missing label's default (never the folder's name: export folders are often named after the patient).
DEFAULT_LABELS = {"subject": "01", "session": "01", "task": "live"}
#: The run folder's file that names its BIDS run (root, labels, run index), so that a resumed run goes on with it.
STATE_FILE = "bids.json"
BIDS_VERSION = "1.9.0"
_LABEL = re.compile(r"^[A-Za-z0-9]+$")
#: fMRIPrep's confound names, and the volumes.jsonl QA keys they come from.
CONFOUNDS = ("framewise_displacement", "dvars", "std_dvars", "global_signal")
_QA_KEYS = ("fd", "dvars", "std_dvars", "global_signal")
MOTION = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")


class BidsError(ValueError):
    """A BIDS copy that cannot be written or finished; the message names the file."""

    user_error = True


def check_label(value: str, name: str) -> str:
    """A BIDS label: letters and digits only (``sub-01`` and ``01`` both give ``01``)."""
    value = str(value).removeprefix(f"{name[:3]}-")
    if not _LABEL.match(value):
        raise ValueError(f"{name} must be a BIDS label (letters and digits only), got {value!r}")
    return value


@dataclass(frozen=True)
class BidsLabels:
    """The entities of one BIDS run."""

    subject: str = DEFAULT_LABELS["subject"]
    session: str = DEFAULT_LABELS["session"]
    task: str = DEFAULT_LABELS["task"]
    run: int = 1

    @property
    def stem(self) -> str:
        """``sub-01_ses-01_task-live_run-01``."""
        return f"sub-{self.subject}_ses-{self.session}_task-{self.task}_run-{self.run:02d}"

    @property
    def func(self) -> Path:
        """``sub-01/ses-01/func``, relative to the BIDS root."""
        return Path(f"sub-{self.subject}", f"ses-{self.session}", "func")


def next_run_index(root: Path, labels: BidsLabels) -> int:
    """The first run index not taken by a ``_bold`` file of these subject, session and task under ``root``."""
    func = root / labels.func
    prefix = f"sub-{labels.subject}_ses-{labels.session}_task-{labels.task}_run-"
    taken = set()
    for p in func.glob(f"{prefix}*_bold.nii*") if func.is_dir() else ():
        number = p.name[len(prefix) :].split("_")[0]
        if number.isdigit():
            taken.add(int(number))
    return next(i for i in range(1, len(taken) + 2) if i not in taken)


# --- the staged 4-D file -----------------------------------------------------------------------------------------


class StagedNifti:
    """An uncompressed float32 4-D NIfTI-1 written volume by volume, valid at every moment.

    Volume ``k`` is written at ``vox_offset + k * volume_bytes`` and the header's ``dim[4]`` is then rewritten to
    the number of volumes up to the last one written; a volume never written (a gap) reads as zeros.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self.header_: Any = None
        self.n_ = 0

    def create(self, shape: tuple[int, ...], affine: np.ndarray, tr: float) -> StagedNifti:
        """A new file for volumes of ``shape`` on ``affine`` (sform and qform code 1), TR in seconds."""
        import nibabel as nib

        hdr = nib.Nifti1Header()
        hdr.set_data_dtype(np.float32)
        hdr.set_data_shape((*shape, 0))
        hdr.set_xyzt_units("mm", "sec")
        hdr.set_sform(affine, code=1)
        hdr.set_qform(affine, code=1)
        hdr.set_zooms((*hdr.get_zooms()[:3], float(tr)))
        hdr.set_slope_inter(1.0, 0.0)
        hdr["vox_offset"] = 352
        self.header_ = hdr
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        self._write_header()
        return self

    def reopen(self) -> StagedNifti:
        """Go on with an existing file: its header says how many volumes it holds."""
        import nibabel as nib

        with open(self.path, "rb") as f:
            self.header_ = nib.Nifti1Header.from_fileobj(f)
        self.n_ = int(self.header_.get_data_shape()[3]) if len(self.header_.get_data_shape()) > 3 else 0
        self._fd = os.open(self.path, os.O_RDWR)
        return self

    @property
    def shape(self) -> tuple[int, int, int]:
        """The volumes' matrix."""
        return tuple(int(n) for n in self.header_.get_data_shape()[:3])  # type: ignore[return-value]

    def write(self, index: int, data: np.ndarray) -> None:
        """Volume ``index`` (float32, ``shape``), then the header if it grew the file."""
        if self._fd is None:
            raise BidsError(f"{self.path} is not open")
        block = np.asarray(data, dtype="<f4").tobytes(order="F")
        offset = 352 + int(index) * len(block)
        os.pwrite(self._fd, block, offset)
        if index + 1 > self.n_:
            self.n_ = int(index) + 1
            self._write_header()

    def _write_header(self) -> None:
        self.header_.set_data_shape((*self.shape_of_header(), self.n_))
        os.pwrite(self._fd, self.header_.binaryblock + b"\0\0\0\0", 0)

    def shape_of_header(self) -> tuple[int, ...]:
        """The spatial dims the header holds."""
        return tuple(int(n) for n in self.header_.get_data_shape()[:3])

    def close(self) -> None:
        """Close the file (it stays valid as it is)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


# --- the sidecar ----------------------------------------------------------------------------------------------------

#: DICOM keyword -> (BIDS key, scale): the only header fields the sidecar ever takes.
_SIDECAR_FIELDS = {
    "Manufacturer": ("Manufacturer", None),
    "ManufacturerModelName": ("ManufacturersModelName", None),
    "SoftwareVersions": ("SoftwareVersions", None),
    "MagneticFieldStrength": ("MagneticFieldStrength", 1.0),
    "EchoTime": ("EchoTime", 0.001),
    "FlipAngle": ("FlipAngle", 1.0),
}


def sidecar_from_file(path: Path | None, fmt: str = "") -> dict[str, Any]:
    """What a scanner file says that a ``_bold.json`` keeps, from a whitelist of DICOM fields (none of the
    patient's); an empty dict for a NIfTI file or a file that cannot be read."""
    if path is None or fmt == "nifti" or not Path(path).is_file():
        return {}
    try:
        import pydicom

        ds = pydicom.dcmread(str(path), stop_before_pixels=True, force=True)
    except Exception as exc:  # noqa: BLE001 - the sidecar is best effort; the volumes are what matters
        log.info("bids: no sidecar fields from %s: %s", Path(path).name, exc)
        return {}
    out: dict[str, Any] = {}
    for keyword, (key, scale) in _SIDECAR_FIELDS.items():
        value = ds.get(keyword)
        if value in (None, ""):
            continue
        try:
            out[key] = str(value).strip() if scale is None else round(float(value) * scale, 6)
        except (TypeError, ValueError):
            continue
    axis = {"ROW": "i", "COL": "j"}.get(str(ds.get("InPlanePhaseEncodingDirection", "")).strip())
    if axis:  # the polarity is not in a standard field: the axis only (BIDS PhaseEncodingAxis)
        out["PhaseEncodingAxis"] = axis
    times = _mosaic_slice_times(ds)
    if times is not None:
        out["SliceTiming"] = times
    return out


def _mosaic_slice_times(ds: Any) -> list[float] | None:
    """A Siemens mosaic's MosaicRefAcqTimes (ms) as SliceTiming (s), from its CSA image header."""
    from service.dicom import read_csa

    for tag in ((0x0029, 0x1010), (0x0029, 0x1110)):
        if tag in ds:
            try:
                items = read_csa(bytes(ds[tag].value)).get("MosaicRefAcqTimes")
                return [round(float(t) / 1000.0, 6) for t in items] if items else None
            except Exception:  # noqa: BLE001 - no slice timing rather than a wrong one
                return None
    return None


# --- the writer thread ------------------------------------------------------------------------------------------


class BidsArchive:
    """The BIDS copy of one serve run, written by a thread of its own.

    Parameters
    ----------
    root : path
        The BIDS root (created, with its ``dataset_description.json``).
    run_dir : path
        The run's records folder: ``bids.json`` there names the BIDS run, so a resumed run goes on with it.
    tr : float
        The run's TR (a volume's own TR, when its file states one, wins in the sidecar).
    labels : dict
        ``subject``, ``session``, ``task`` given as options (empty: from a trigger event, else the default).
    """

    def __init__(self, root: str | Path, run_dir: str | Path, tr: float, labels: dict[str, str] | None = None):
        self.root, self.run_dir, self.tr = Path(root).resolve(), Path(run_dir), float(tr)
        self.options = {k: v for k, v in (labels or {}).items() if v}
        self.from_events: dict[str, Any] = {}
        self.labels_: BidsLabels | None = None
        self.staged_: StagedNifti | None = None
        self.errors_ = 0
        self.skipped_ = 0
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name="bids-writer", daemon=True)
        state = read_state(self.run_dir)
        if state is not None:  # a resumed run: the same BIDS run
            self.root = Path(state["root"])
            self.labels_ = BidsLabels(state["subject"], state["session"], state["task"], int(state["run"]))

    def start(self) -> BidsArchive:
        """Start the writer thread."""
        self._thread.start()
        return self

    # --- the hot path's side: a queue put each ---------------------------------------------------------------

    def volume(self, vol: Any) -> None:
        """Hand one volume as taken (before motion correction) to the writer thread."""
        self._queue.put(("volume", vol))

    def event(self, header: dict[str, Any]) -> None:
        """Hand one inbound event to the writer thread (a ``trigger`` may carry the labels)."""
        if header.get("kind") == "trigger":
            self._queue.put(("event", dict(header)))

    def stop(self) -> dict[str, Any] | None:
        """Write what is queued and stop the thread; the BIDS run's root and stem (None before any volume)."""
        self._queue.put(None)
        if self._thread.is_alive():
            self._thread.join()
        if self.staged_ is not None:
            self.staged_.close()
        if self.labels_ is None:
            return None
        return {"root": str(self.root), "bold": str(self.labels_.func / f"{self.labels_.stem}_bold.nii.gz")}

    def close(self) -> Path | None:
        """:meth:`stop`, then finish the BIDS run (:func:`finish_bids`); its ``_bold.nii.gz``, or None."""
        return None if self.stop() is None else finish_bids(self.run_dir)

    # --- the writer thread ----------------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            kind, value = item
            try:
                if kind == "event":
                    self._labels_from_trigger(value)
                else:
                    self._write(value)
            except Exception as exc:  # noqa: BLE001 - the copy never costs the live path a volume
                self.errors_ += 1
                log.error("bids: %s not written to the BIDS copy: %s", kind, exc)

    def _labels_from_trigger(self, h: dict[str, Any]) -> None:
        for name in ("subject", "session", "run"):
            value = h.get(name)
            if value is None or self.labels_ is not None:
                continue
            try:
                self.from_events[name] = int(value) if name == "run" else check_label(str(value), name)
            except ValueError:
                log.warning("bids: the trigger's %s %r is not a BIDS label; not used", name, value)

    def _open(self, vol: Any) -> None:
        """The first volume: the labels are fixed, the staged file and the sidecar written (or reopened)."""
        if self.labels_ is None:
            values = {**DEFAULT_LABELS, **self.from_events, **self.options}
            run = values.pop("run", None)
            labels = BidsLabels(**{k: values[k] for k in ("subject", "session", "task")})
            index = int(run) if run else next_run_index(self.root, labels)
            self.labels_ = replace(labels, run=index)
            write_dataset_files(self.root)
            tr = float(vol.tr) if getattr(vol, "tr", None) else self.tr
            sidecar = {"TaskName": self.labels_.task, "RepetitionTime": tr, **sidecar_from_file(vol.path, vol.fmt)}
            write_json(self.root / self.labels_.func / f"{self.labels_.stem}_bold.json", sidecar)
            write_state(self.run_dir, {"root": str(self.root), **asdict(self.labels_), "tr": tr})
        labels = self.labels_
        staged = StagedNifti(self.root / labels.func / f"{labels.stem}_bold.nii")
        done = staged.path.with_name(staged.path.name + ".gz")
        if not staged.path.exists() and done.exists():  # a finished run that goes on: unpacked again
            unpack(done, staged.path)
        if staged.path.exists():
            staged.reopen()
        else:
            state = read_state(self.run_dir) or {}
            staged.create(tuple(vol.data.shape), np.asarray(vol.affine), float(state.get("tr", self.tr)))
        done.unlink(missing_ok=True)
        self.staged_ = staged

    def _write(self, vol: Any) -> None:
        if self.staged_ is None:
            self._open(vol)
        staged = self.staged_
        if tuple(vol.data.shape) != staged.shape:
            self.skipped_ += 1
            log.warning(
                "bids: volume %s is on another grid %s than the run's %s", vol.index, vol.data.shape, staged.shape
            )
            return
        staged.write(int(vol.index), vol.data)


# --- files ----------------------------------------------------------------------------------------------------------


def write_json(path: Path, obj: dict[str, Any]) -> None:
    """Indented JSON through a temporary file (parent folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def read_state(run_dir: Path) -> dict[str, Any] | None:
    """The run's ``bids.json`` (root, labels, run index, TR), or None before its first volume."""
    path = Path(run_dir) / STATE_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def write_state(run_dir: Path, state: dict[str, Any]) -> None:
    """Write the run's ``bids.json``."""
    write_json(Path(run_dir) / STATE_FILE, state)


def write_dataset_files(root: Path) -> None:
    """The raw data set's and the derivative's ``dataset_description.json`` and README, when absent."""
    raw = {"Name": "fmriface live runs", "BIDSVersion": BIDS_VERSION, "DatasetType": "raw", "License": "n/a"}
    deriv = {
        "Name": "fmriface live run derivatives",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "fmriface serve"}],
    }
    for path, obj in (
        (root / "dataset_description.json", raw),
        (root / "derivatives/fmriface/dataset_description.json", deriv),
    ):
        if not path.is_file():
            write_json(path, obj)
    readme = root / "README"
    if not readme.exists():
        readme.write_text(
            "Runs recorded live by `fmriface serve`: the volumes as the scanner exported them, the experiment's\n"
            "events, and under derivatives/fmriface/ the service's confounds and decoded trial latents.\n",
            encoding="utf-8",
        )


def unpack(src: Path, dst: Path) -> None:
    """A finished ``.nii.gz`` back into the float32 staged ``.nii`` (a resumed run goes on writing it)."""
    import nibabel as nib

    img = nib.load(str(src))
    data = np.asarray(img.dataobj, dtype=np.float32)
    staged = StagedNifti(dst).create(data.shape[:3], img.affine, float(img.header.get_zooms()[3]))
    for k in range(data.shape[3]):
        staged.write(k, data[..., k])
    staged.close()


def _narrowest(data: np.ndarray) -> type:
    """int16 or uint16 when every value is an integer in its range (lossless), else float32."""
    if data.size and np.isfinite(data).all() and np.array_equal(data, np.round(data)):
        lo, hi = float(data.min()), float(data.max())
        if lo >= -32768 and hi <= 32767:
            return np.int16
        if lo >= 0 and hi <= 65535:
            return np.uint16
    return np.float32


def compress(staged: Path, done: Path) -> None:
    """The staged float32 ``.nii`` as ``.nii.gz`` in the narrowest lossless type, through a temporary file."""
    import nibabel as nib

    img = nib.load(str(staged), mmap=False)
    data = np.asarray(img.dataobj, dtype=np.float32)
    dtype = _narrowest(data)
    hdr = img.header.copy()
    hdr.set_data_dtype(dtype)
    hdr.set_slope_inter(1.0, 0.0)
    hdr["vox_offset"] = 352
    tmp = done.with_name(f".{done.name}.partial")
    with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=1, mtime=0) as gz:
        gz.write(hdr.binaryblock + b"\0\0\0\0")
        gz.write(data.astype(dtype).tobytes(order="F"))
    tmp.replace(done)


def finish_bids(run_dir: str | Path) -> Path:
    """Finish a run's BIDS copy (at close, or ``fmriface bids-finish`` after a crash): the BOLD compressed, the
    events and the derivatives written from the run's records. Idempotent; returns the ``_bold.nii.gz``."""
    from service.live.bids_tables import write_confounds, write_events, write_trial_latents

    run_dir = Path(run_dir)
    state = read_state(run_dir)
    if state is None:
        raise BidsError(f"{run_dir} has no {STATE_FILE}: the run wrote no BIDS copy (no volume, or --no-bids)")
    root = Path(state["root"])
    labels = BidsLabels(state["subject"], state["session"], state["task"], int(state["run"]))
    func = root / labels.func
    staged, done = func / f"{labels.stem}_bold.nii", func / f"{labels.stem}_bold.nii.gz"
    if staged.exists():
        compress(staged, done)
        staged.unlink()
    if not done.exists():
        raise BidsError(f"{done} is missing and no staged {staged.name} is left to finish it from")
    write_dataset_files(root)
    write_events(run_dir, func / f"{labels.stem}_events.tsv", root)
    deriv = root / "derivatives" / "fmriface" / labels.func
    write_confounds(run_dir, deriv / f"{labels.stem}_desc-confounds_timeseries.tsv", state.get("tr"))
    write_trial_latents(run_dir, deriv / f"{labels.stem}_desc-decoded_trials.tsv")
    return done
