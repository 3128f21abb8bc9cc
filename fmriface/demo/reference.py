"""The reference face space shipped with the repository, so that ``fmriface demo`` need not train one.

The small-64 VAE-GAN trained once on procedural faces with ``fmriface train-vaegan --config vaegan-converged``
is kept in ``models/reference/small-64/`` (in the repository, not in the wheel: the wheel is also the service's
light install, and only the demo needs these weights). What is kept is what ``fmriface fit --vaegan`` needs and
nothing more, within 25 MB:

- ``weights-fp16.pt``: the encoder (its ``z_mu`` head only: the ``log_sigma`` head serves training alone), the
  decoder and the discriminator (the fit's perceptual features), every weight matrix and kernel in float16,
  biases and batch-norm parameters and statistics in float32;
- ``facespace.json``, ``attributes.npz``, ``heldout_faces.npy``, ``samples.png``, ``quality.csv``,
  ``train_config.json``: the training run's own records;
- ``reference.json``: the manifest (SHA-256 and size of every file, the float16 parity measured when it was
  packed, the training's provenance); ``MODEL_CARD.md``: the same for people.

:func:`pack_reference` writes such a folder from a ``train-vaegan`` output and refuses when float16 does not
reproduce float32 (decoded images, held-out reconstruction correlation); :func:`verify_reference` checks every
file against the manifest; :func:`materialise_reference` turns a verified folder into an ordinary face-space
folder (a float32 ``checkpoint.pt`` beside the records), which is what the demo's fit reads.

Examples
--------
python -m fmriface.demo.reference pack /work/refspace/run models/reference/small-64
python -m fmriface.demo.reference verify models/reference/small-64
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

from fmriface.common import UsageError

__all__ = [
    "REFERENCE_NAME",
    "ReferenceError",
    "reference_dir",
    "resolve_reference",
    "pack_reference",
    "verify_reference",
    "materialise_reference",
    "fp16_state",
    "full_state",
]

#: The shipped reference face space the demo uses by default.
REFERENCE_NAME = "small-64"
MANIFEST = "reference.json"
WEIGHTS = "weights-fp16.pt"
CARD = "MODEL_CARD.md"
FORMAT = "fmriface-reference/1"
#: Tensors left out of the shipped weights (training only); :func:`full_state` puts zeros back.
DROPPED_PREFIXES = ("encoder.fc_log_sigma.",)
#: The training run's records copied beside the weights (those it has).
RECORDS = ("facespace.json", "attributes.npz", "heldout_faces.npy", "samples.png", "quality.csv", "train_config.json")
#: Float16 must reproduce float32 within these: decoded images (max abs, images in [0, 1]) and the held-out
#: reconstruction correlation (abs difference).
IMAGE_TOLERANCE = 0.03
CORR_TOLERANCE = 0.002
#: The most the shipped folder may weigh.
MAX_BYTES = 25_000_000


class ReferenceError(UsageError):
    """A reference face space that is missing, damaged (a file's hash differs from its manifest) or unpacked."""


def reference_dir(name: str = REFERENCE_NAME) -> Path:
    """Where the shipped reference ``name`` lives: ``models/reference/<name>/`` beside the networks' code."""
    import models

    return Path(models.__file__).resolve().parent / "reference" / name


def resolve_reference(value: str) -> Path:
    """A reference face space by shipped name (``small-64``) or by path to a packed folder."""
    path = Path(value).expanduser()
    if "/" in value or path.is_dir():
        return path
    return reference_dir(value)


def sha256(path: Path) -> str:
    """The SHA-256 of a file, hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fp16_state(state: dict[str, Any]) -> dict[str, Any]:
    """The shipped state dict: weight matrices and kernels (2-D and more) in float16, the rest as it is, the
    training-only tensors (:data:`DROPPED_PREFIXES`) left out."""
    import torch

    out = {}
    for key, value in state.items():
        if key.startswith(DROPPED_PREFIXES):
            continue
        t = value.detach().cpu()
        out[key] = t.to(torch.float16) if t.is_floating_point() and t.dim() >= 2 else t.clone()
    return out


def full_state(shipped: dict[str, Any], model) -> dict[str, Any]:
    """A state dict ``model`` loads strictly: the shipped tensors in float32 and zeros for those left out
    (the ``log_sigma`` head then gives ``sigma = 1``: the face space, which uses ``z_mu``, is unchanged)."""
    import torch

    out = {}
    for key, ref in model.state_dict().items():
        if key in shipped:
            t = shipped[key]
            out[key] = t.to(ref.dtype) if t.is_floating_point() else t
        elif key.startswith(DROPPED_PREFIXES):
            out[key] = torch.zeros_like(ref)
        else:
            raise ReferenceError(f"the shipped weights lack {key!r}, which the network needs")
    return out


def _model_from(shipped: dict[str, Any]):
    from models.config import VAEGANConfig
    from models.vaegan import VAEGAN

    model = VAEGAN(VAEGANConfig.from_dict(shipped["config"]))
    model.load_state_dict(full_state(shipped["model"], model))
    return model.eval()


def _held_out_faces(run: Path, image_size: int) -> np.ndarray:
    """The training run's held-out faces (its quality checks' faces), drawn again from its recorded source."""
    from offline.datasets.sources import open_source

    cfg = json.loads((run / "train_config.json").read_text())
    source = open_source(cfg["data"], image_size, cfg["seed"], cfg["n_held_out"], cfg.get("folder_crop", False))
    held, _ = source.held_out(cfg["n_held_out"])
    return held


def measure_parity(model32, model16, held: np.ndarray, seed: int = 0) -> dict[str, float]:
    """How far the float16-shipped network is from the float32 one: max abs differences of the encoder's
    latents and of the decoded images (of the held-out faces' latents and of random latents), and the held-out
    reconstruction correlation of each (mean Pearson r over the faces, as ``train-vaegan`` measures it)."""
    import torch

    from offline.training.io import pixel_correlation

    x = torch.from_numpy(held.astype(np.float32) / 255.0).permute(0, 3, 1, 2).contiguous()
    z_rand = torch.rand(16, model32.cfg.latent_size, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    with torch.no_grad():
        z32, z16 = model32.encoder(x)[0], model16.encoder(x)[0]
        rec32, rec16 = model32.decoder(z32), model16.decoder(z16)
        dec16 = model16.decoder(z32)
        rand32, rand16 = model32.decoder(z_rand), model16.decoder(z_rand)
    truth = held.astype(np.float32) / 255.0

    def corr(rec: torch.Tensor) -> float:
        return float(pixel_correlation(truth, rec.permute(0, 2, 3, 1).numpy()).mean())

    return {
        "n_faces": int(len(held)),
        "latent_max_abs": float((z32 - z16).abs().max()),
        "decoded_max_abs": float(max((rec32 - dec16).abs().max(), (rand32 - rand16).abs().max())),
        "reconstruction_max_abs": float((rec32 - rec16).abs().max()),
        "heldout_pixel_corr_fp32": round(corr(rec32), 4),
        "heldout_pixel_corr_fp16": round(corr(rec16), 4),
    }


def pack_reference(run: str | Path, dest: str | Path, command: str = "", name: str = REFERENCE_NAME) -> dict:
    """Write the reference folder ``dest`` from the ``train-vaegan`` output ``run``; returns its manifest.

    Raises :class:`ReferenceError` when float16 does not reproduce float32 within :data:`IMAGE_TOLERANCE` and
    :data:`CORR_TOLERANCE`, or when the folder would weigh more than :data:`MAX_BYTES`.
    """
    import torch

    from models.checkpoint import load_checkpoint

    run, dest = Path(run), Path(dest)
    meta = json.loads((run / "facespace.json").read_text())
    model32, state = load_checkpoint(run / meta.get("checkpoint", "checkpoint.pt"))
    shipped = {"format": FORMAT, "config": model32.cfg.to_dict(), "model": fp16_state(model32.state_dict())}
    parity = measure_parity(model32, _model_from(shipped), _held_out_faces(run, model32.cfg.image_size))
    gap = abs(parity["heldout_pixel_corr_fp32"] - parity["heldout_pixel_corr_fp16"])
    if parity["decoded_max_abs"] > IMAGE_TOLERANCE or gap > CORR_TOLERANCE:
        raise ReferenceError(
            f"float16 weights do not reproduce float32: decoded images differ by {parity['decoded_max_abs']:.4f}"
            f" (tolerance {IMAGE_TOLERANCE}), held-out r by {gap:.4f} (tolerance {CORR_TOLERANCE})"
        )
    dest.mkdir(parents=True, exist_ok=True)
    torch.save(shipped, dest / WEIGHTS)
    for record in RECORDS:
        if (run / record).is_file():
            shutil.copyfile(run / record, dest / record)
    summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").is_file() else {}
    manifest = {
        "format": FORMAT,
        "name": name,
        "network": model32.cfg.name,
        "latent_size": model32.cfg.latent_size,
        "image_size": model32.cfg.image_size,
        "weights": {"file": WEIGHTS, "dtype": "float16 (matrices, kernels); float32 (the rest)"},
        "dropped": list(DROPPED_PREFIXES),
        "parity": {**parity, "image_tolerance": IMAGE_TOLERANCE, "corr_tolerance": CORR_TOLERANCE},
        "training": {
            "command": command,
            "step": int(state.get("step", 0)),
            "stop_reason": summary.get("stop_reason", meta.get("quality", {}).get("stop_reason")),
            "wall_s": summary.get("wall_s"),
            "data": summary.get("data"),
            "quality": {k: v for k, v in meta.get("quality", {}).items() if k != "history"},
        },
    }
    (dest / CARD).unlink(missing_ok=True)
    manifest["files"] = _file_table(dest)
    (dest / CARD).write_text(model_card(manifest, dest))
    manifest["files"] = _file_table(dest)
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    total = sum(f["bytes"] for f in manifest["files"].values())
    if total > MAX_BYTES:
        raise ReferenceError(f"{dest} weighs {total / 1e6:.1f} MB, more than {MAX_BYTES / 1e6:.0f} MB")
    return manifest


def _file_table(folder: Path) -> dict[str, dict[str, Any]]:
    return {
        p.name: {"sha256": sha256(p), "bytes": p.stat().st_size}
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != MANIFEST
    }


def verify_reference(folder: str | Path) -> dict:
    """The manifest of a reference folder, after checking that every file it lists is there with its size and
    SHA-256 (a Git LFS pointer or a partial download is named as such); :class:`ReferenceError` otherwise."""
    folder = Path(folder)
    fix = "restore the folder from the repository (git checkout -- <folder>) or train one: fmriface demo --train-facespace"
    path = folder / MANIFEST
    if not path.is_file():
        raise ReferenceError(f"no reference face space at {folder} (no {MANIFEST}); {fix}")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ReferenceError(f"{path} is not valid JSON ({exc}); {fix}") from None
    if manifest.get("format") != FORMAT:
        raise ReferenceError(f"{path}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    for name, want in manifest.get("files", {}).items():
        f = folder / name
        if not f.is_file():
            raise ReferenceError(f"{f} is missing from the reference face space; {fix}")
        size = f.stat().st_size
        if size != want["bytes"]:
            lfs = size < 1024 and f.read_bytes().startswith(b"version https://git-lfs")
            what = "a Git LFS pointer, not the file" if lfs else f"{size} bytes, the manifest says {want['bytes']}"
            raise ReferenceError(f"{f} is {what}; {fix}")
        got = sha256(f)
        if got != want["sha256"]:
            raise ReferenceError(
                f"{f}: SHA-256 {got[:16]}... differs from the manifest's {want['sha256'][:16]}...; {fix}"
            )
    return manifest


def materialise_reference(folder: str | Path, out: str | Path) -> Path:
    """Verify the reference ``folder`` and write into ``out`` the face-space folder ``fit --vaegan`` reads: a
    float32 ``checkpoint.pt`` (the ``log_sigma`` head zero), ``facespace.json`` and the other records."""
    import torch

    from models.checkpoint import save_checkpoint

    folder, out = Path(folder), Path(out)
    manifest = verify_reference(folder)
    shipped = torch.load(folder / WEIGHTS, map_location="cpu", weights_only=True)
    model = _model_from(shipped)
    out.mkdir(parents=True, exist_ok=True)
    step = int(manifest.get("training", {}).get("step", 0))
    save_checkpoint(out / "checkpoint.pt", model, step=step, extra={"reference": str(folder)})
    for name in manifest["files"]:
        if name != WEIGHTS:
            shutil.copyfile(folder / name, out / name)
    meta = json.loads((out / "facespace.json").read_text())
    meta["checkpoint"] = "checkpoint.pt"
    (out / "facespace.json").write_text(json.dumps(meta, indent=2) + "\n")
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return out


def model_card(manifest: dict, folder: Path) -> str:
    """``MODEL_CARD.md``: the data, the config, the steps, the quality, the float16 parity, the files and the
    commands that reproduce the folder."""
    t, p = manifest["training"], manifest["parity"]
    q = t.get("quality", {})
    cfg = json.loads((folder / "train_config.json").read_text()) if (folder / "train_config.json").is_file() else {}
    readout = q.get("attribute_readout") or {}
    rows = "\n".join(f"| {k} | {v:.2f} |" for k, v in sorted(readout.items(), key=lambda kv: -kv[1]))
    files = "\n".join(
        f"| `{n}` | {f['bytes']:,} | `{f['sha256']}` |" for n, f in manifest["files"].items() if n != CARD
    )
    wall = f"{t['wall_s'] / 60:.1f} min" if t.get("wall_s") else "unknown"
    data = t.get("data") or {}
    source = f"{data.get('source', cfg.get('data', 'procedural'))} ({data.get('size', '?')} px, framing {data.get('framing')})"
    return f"""# Reference face space `{manifest["name"]}`

The {manifest["network"]} VAE-GAN (latent {manifest["latent_size"]}, {manifest["image_size"]} px) that
`fmriface demo` uses instead of training a face space each time (`fmriface demo --train-facespace` trains one).
Intended use: the demo and tests on the digital twin. Not for real faces: it has only seen procedural ones.

## Data
{source}: faces drawn by the project's procedural face generator ({len(data.get("attributes", []))} attributes),
a new batch every step; {cfg.get("n_held_out", "?")} held-out faces for the quality checks,
{cfg.get("n_attribute_faces", "?")} labelled faces for the attribute read-outs.

## Config and steps
The training config as run (`train_config.json` here; the command below names its preset):
batch {cfg.get("batch_size")}, learning rates {cfg.get("lr_encoder")} / {cfg.get("lr_decoder")} /
{cfg.get("lr_discriminator")}, weights KL {cfg.get("kl_weight")}, feature {cfg.get("feature_weight")}, pixel
{cfg.get("pixel_weight")}, GAN {cfg.get("gan_weight")}, plateau rule {cfg.get("plateau_checks")} checks /
{cfg.get("plateau_tol")}, cap {cfg.get("max_minutes")} min, seed {cfg.get("seed")}, threads {cfg.get("threads")}.
Trained {t.get("step")} steps ({wall}); stopped by: {t.get("stop_reason")}.{_not_converged(t, cfg)}

## Quality (at the last step, float32; `quality.csv` has every check)
Held-out reconstruction r = {q.get("heldout_pixel_corr")} (mean pixel correlation over the held-out faces).
Attributes read linearly from the latents (cross-validated balanced accuracy, 0.5 = chance; mean
{q.get("attribute_readout_mean")}):

| attribute | read-out |
|---|---|
{rows}

## Float16
Matrices and kernels are stored in float16 (biases, batch norm in float32); the encoder's `log_sigma` head is
left out (training only; put back as zeros on loading, which changes nothing the face space computes).
Against float32 on the {p["n_faces"]} held-out faces: latents max abs diff {p["latent_max_abs"]:.2e}, decoded images
max abs diff {p["decoded_max_abs"]:.2e} (tolerance {p["image_tolerance"]}), reconstructions
{p["reconstruction_max_abs"]:.2e}; held-out r {p["heldout_pixel_corr_fp32"]} (float32) against
{p["heldout_pixel_corr_fp16"]} (float16; tolerance {p["corr_tolerance"]}).

## Files (SHA-256; `reference.json` holds the same, and the demo checks them before use)

| file | bytes | SHA-256 |
|---|---|---|
{files}

## Reproduce
```
{t.get("command") or "fmriface train-vaegan --config vaegan-converged --data procedural --out RUN"}
python -m fmriface.demo.reference pack RUN models/reference/{manifest["name"]}
```
On 2 CPU cores the run is not bit-for-bit reproducible across thread counts and machines; the wall-clock cap
makes the step it stops at depend on the machine's speed.
"""


def _not_converged(training: dict, cfg: dict) -> str:
    """A sentence for the card when the wall-clock cap, not the plateau rule, ended the training."""
    if training.get("stop_reason") != "max_minutes":
        return ""
    return (
        f" Not at its plateau: the {cfg.get('max_minutes')}-minute cap came first (the plateau rule stops when"
        f" {cfg.get('plateau_checks')} checks in a row add less than {cfg.get('plateau_tol')}; `quality.csv` shows"
        " the last checks still rising)."
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m fmriface.demo.reference pack RUN DEST`` or ``verify DEST``."""
    p = argparse.ArgumentParser(prog="python -m fmriface.demo.reference", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    pk = sub.add_parser("pack", help="pack a train-vaegan output into a reference folder")
    pk.add_argument("run", type=Path)
    pk.add_argument("dest", type=Path)
    pk.add_argument("--command", default="", help="the training command, for the model card")
    vf = sub.add_parser("verify", help="check a reference folder against its manifest")
    vf.add_argument("dest", type=Path)
    args = p.parse_args(argv)
    try:
        if args.what == "pack":
            manifest = pack_reference(args.run, args.dest, command=args.command)
        else:
            manifest = verify_reference(args.dest)
    except ReferenceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"files": manifest["files"], "parity": manifest["parity"]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
