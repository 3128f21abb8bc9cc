"""VAE-GAN training (Larsen et al. 2016, as used by VanRullen & Reddy 2019): the loop behind ``fmriface train-vaegan``.

One linear loop: draw a batch (a pure function of seed, step and rank), run :func:`offline.training.losses.train_step`
(three RMSProp optimisers, equilibrium rule), log, draw sample grids, checkpoint. Under ``torchrun`` each network
is wrapped in DistributedDataParallel (gloo on CPU, nccl on CUDA), every rank draws its own shard of each global
batch and rank 0 alone writes files. A resumed run continues with exactly the losses of an uninterrupted one on
the CPU: the checkpoint holds the weights, the optimiser states, the step and the random generator.

Output folder: ``checkpoint.pt`` (latest; rebuilds the model from the configuration stored inside),
``facespace.json``, ``train_config.json``, ``metrics.csv``, ``samples/step_NNNNNN.png`` and ``samples.png``
(rows: held-out faces, their reconstructions, prior samples), ``attributes.npz`` (attribute directions) and
``summary.json`` (device, wall time, held-out pixel correlation, data notes).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from models.checkpoint import load_checkpoint, save_checkpoint
from models.config import preset
from models.vaegan import VAEGAN
from offline.datasets import FaceSource, open_source
from offline.facespace import FACESPACE_FILE, write_vaegan_meta
from offline.training.io import MetricsLog, pixel_correlation, setup_device, write_grid
from offline.training.losses import LossWeights, recalibrate_batch_norm, train_step

__all__ = ["TrainConfig", "train_vaegan", "FACESPACE_FILE", "CHECKPOINT_FILE"]

CHECKPOINT_FILE = "checkpoint.pt"
HELDOUT_FILE = "heldout_faces.npy"


@dataclass(frozen=True)
class TrainConfig:
    """Options of ``fmriface train-vaegan`` (TOML presets ``configs/vaegan-*.toml``).

    The loss weights: the encoder minimises ``kl_weight * KL / D + feature_weight * L_feat + pixel_weight *
    L_pix``; the decoder ``gamma * feature_weight * L_feat + pixel_weight * L_pix + gan_weight * L_gan``; the
    discriminator its cross-entropy. ``L_feat`` is the mean squared difference of the discriminator's hidden
    layer between an image and its reconstruction (Larsen's "reconstruction beyond pixels"); ``L_pix`` is a
    plain pixel mean squared error, an addition of this project for short CPU budgets (the feature loss alone
    converges slowly); set ``pixel_weight = 0`` for the method as published. ``D`` is the number of image
    elements, so the KL is on the per-element scale of the reconstruction losses.

    ``max_minutes`` (0 = none) is a wall-clock budget for the training loop: when it is spent, training stops
    early at the current step (checkpointed, recorded as ``stopped_early`` in the summary), so a demo keeps to
    its time on a loaded machine; a later ``--resume`` continues towards ``steps``.

    Before each sample grid and the final checkpoint, the batch-norm moving averages are recomputed exactly on
    ``bn_recalibration_images`` fresh training-distribution images (0 = keep the moving averages): after a
    short run the averages lag behind the weights and inference (eval mode, ONNX) would drift.

    At each sample grid the face space's quality is measured (:func:`_quality`: the held-out reconstruction
    correlation, and each attribute's cross-validated linear readout from the latents of the
    ``n_attribute_faces`` labelled faces) and kept, with its history, in ``facespace.json`` and
    ``quality.csv``. With ``plateau_checks`` = ``k`` > 0, training stops (``stopped_early``, reason
    ``plateau``) once neither the reconstruction correlation nor the mean attribute readout has risen by more
    than ``plateau_tol`` over the best of the checks before the last ``k``: converged, for this budget.
    """

    network: Literal["paper-128", "small-64"] = "small-64"
    latent_size: int = 1024
    data: str = "procedural"
    folder_crop: bool = False
    batch_size: int = 32
    steps: int = 1000
    max_minutes: float = 0.0
    lr_encoder: float = 3e-4
    lr_decoder: float = 3e-4
    lr_discriminator: float = 3e-4
    rmsprop_alpha: float = 0.9
    kl_weight: float = 1.0
    feature_weight: float = 1.0
    pixel_weight: float = 0.0
    gan_weight: float = 1.0
    gamma: float = 0.75
    equilibrium: float = 0.68
    margin: float = 0.35
    log_every: int = 10
    sample_every: int = 100
    checkpoint_every: int = 500
    n_samples: int = 8
    n_held_out: int = 64
    n_attribute_faces: int = 1000
    bn_recalibration_images: int = 256
    plateau_checks: int = 0
    plateau_tol: float = 0.002
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = 0

    def __post_init__(self) -> None:
        for key in ("batch_size", "steps", "log_every", "sample_every", "checkpoint_every", "latent_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be at least 1, got {getattr(self, key)}")
        if self.plateau_checks < 0 or self.plateau_tol < 0:
            raise ValueError("plateau_checks and plateau_tol must be >= 0")
        for key in ("lr_encoder", "lr_decoder", "lr_discriminator"):
            if getattr(self, key) <= 0:
                raise ValueError(f"{key} must be positive, got {getattr(self, key)}")

    @property
    def weights(self) -> LossWeights:
        """The loss weights and equilibrium settings of :func:`train_step`, from this config."""
        return LossWeights(
            kl=self.kl_weight,
            feature=self.feature_weight,
            pixel=self.pixel_weight,
            gan=self.gan_weight,
            gamma=self.gamma,
            equilibrium=self.equilibrium,
            margin=self.margin,
        )


def _log(msg: str) -> None:
    """Write one line to stderr through tqdm, which keeps a running progress bar intact; off with FMRIFACE_QUIET=1."""
    if os.environ.get("FMRIFACE_QUIET") != "1":
        from tqdm import tqdm

        tqdm.write(msg, file=sys.stderr)
        sys.stderr.flush()


def _to_tensor(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 ``[N, H, W, 3]`` -> float ``[N, 3, H, W]`` in [0, 1]."""
    return torch.from_numpy(images).to(device).permute(0, 3, 1, 2).float().div_(255.0)


def _make_optimizers(model: VAEGAN, cfg: TrainConfig) -> dict[str, torch.optim.Optimizer]:
    lrs = {"encoder": cfg.lr_encoder, "decoder": cfg.lr_decoder, "discriminator": cfg.lr_discriminator}
    return {
        name: torch.optim.RMSprop(getattr(model, name).parameters(), lr=lr, alpha=cfg.rmsprop_alpha)
        for name, lr in lrs.items()
    }


def _recalibrate(model: VAEGAN, source: FaceSource, cfg: TrainConfig, device: torch.device) -> None:
    """Exact batch-norm statistics for inference (see :func:`recalibrate_batch_norm`), from a stream of
    training-distribution batches that training itself never draws (steps past 10**8)."""
    if cfg.bn_recalibration_images < 1:
        return
    n = min(cfg.batch_size, cfg.bn_recalibration_images)
    batches = [
        _to_tensor(source.batch(10**8 + k, n)[0], device) for k in range(max(1, cfg.bn_recalibration_images // n))
    ]
    recalibrate_batch_norm(model.encoder, model.decoder, model.discriminator, batches, seed=cfg.seed)


@torch.no_grad()
def _reconstruct(model: VAEGAN, images: np.ndarray, device: torch.device, batch: int = 64) -> np.ndarray:
    """Eval-mode reconstructions ``float [N, H, W, 3]`` of uint8 faces."""
    was = model.training
    model.eval()
    out = [
        model.decoder(model.encoder(_to_tensor(images[i : i + batch], device))[0]).permute(0, 2, 3, 1).cpu().numpy()
        for i in range(0, len(images), batch)
    ]
    model.train(was)
    return np.concatenate(out)


@torch.no_grad()
def _samples(model: VAEGAN, held: np.ndarray, z_prior: torch.Tensor, device: torch.device, path: Path) -> float:
    """Write the sample grid; returns the held-out pixel correlation (mean over the held-out faces)."""
    rec = _reconstruct(model, held, device)
    was = model.training
    model.eval()
    prior = model.decoder(z_prior.to(device)).permute(0, 2, 3, 1).cpu().numpy()
    model.train(was)
    n = len(z_prior)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_grid(path, [held[:n], rec[:n], prior])
    return float(pixel_correlation(held.astype(np.float32) / 255.0, rec).mean())


def _labelled_faces(source: FaceSource, cfg: TrainConfig) -> tuple[np.ndarray, np.ndarray] | None:
    """The ``n_attribute_faces`` labelled faces (images, attributes), or None when the source has no labels."""
    if not source.attribute_names or cfg.n_attribute_faces < 2:
        return None
    chunk = 100
    imgs, attrs = [], []
    for k in range((cfg.n_attribute_faces + chunk - 1) // chunk):
        im, at = source.batch(k, min(chunk, cfg.n_attribute_faces - k * chunk))
        imgs.append(im)
        attrs.append(at)
    return np.concatenate(imgs), np.concatenate(attrs)


def _encode(model: VAEGAN, images: np.ndarray, device: torch.device) -> np.ndarray:
    from offline.facespace import VAEGANFaceSpace

    return VAEGANFaceSpace(model, device=device).encode(images)


def _quality(model: VAEGAN, source: FaceSource, labelled, corr: float, device: torch.device) -> dict[str, Any]:
    """The face space's quality now: held-out reconstruction correlation, and each attribute's cross-validated
    linear readout (balanced accuracy) from the latents of the labelled faces, with their mean."""
    from offline.facespace import attribute_readout

    q: dict[str, Any] = {"heldout_pixel_corr": round(float(corr), 4)}
    if labelled is not None:
        readout = attribute_readout(_encode(model, labelled[0], device), labelled[1], source.attribute_names)
        q["attribute_readout"] = readout
        q["attribute_readout_mean"] = round(float(np.mean(list(readout.values()))), 4) if readout else None
    return q


def plateaued(history: list[dict[str, Any]], checks: int, tol: float) -> bool:
    """Whether the last ``checks`` quality checks raised neither the reconstruction correlation nor the mean
    attribute readout by more than ``tol`` above the best before them."""
    if checks <= 0 or len(history) <= checks:
        return False
    for key in ("heldout_pixel_corr", "attribute_readout_mean"):
        values = [h.get(key) for h in history]
        if any(v is None for v in values):
            continue
        if max(values[-checks:]) > max(values[:-checks]) + tol:
            return False
    return True


def _attribute_directions(model: VAEGAN, labelled, names: tuple[str, ...], device: torch.device, out: Path) -> dict:
    """Save ``attributes.npz`` from the labelled faces' latents; returns a summary (or why there is none)."""
    from offline.facespace import directions_from_latents

    if labelled is None:
        return {"attributes": "none (the data source has no attributes)"}
    latents = _encode(model, labelled[0], device)
    kept, dirs = directions_from_latents(latents, labelled[1], names, latents.shape[1])
    np.savez(out / "attributes.npz", names=np.array(kept), directions=dirs)
    return {"attributes": list(kept), "n_attribute_faces": len(labelled[0])}


def _append_quality(path: Path, q: dict[str, Any]) -> None:
    """One row of ``quality.csv`` per check: step, seconds, held-out correlation, mean readout, each attribute's."""
    row = {k: v for k, v in q.items() if k != "attribute_readout"}
    row.update({f"readout_{k}": v for k, v in (q.get("attribute_readout") or {}).items()})
    new = not path.exists()
    with open(path, "a", encoding="utf-8") as f:
        if new:
            f.write(",".join(row) + "\n")
        f.write(",".join("" if v is None else str(v) for v in row.values()) + "\n")


def _budget_spent(t_start: float, minutes: float, distributed: bool, device: torch.device) -> bool:
    """Whether the wall-clock budget is spent (rank 0 decides for all ranks, so they stop together)."""
    spent = torch.tensor([float(time.perf_counter() - t_start > 60.0 * minutes)], device=device)
    if distributed:
        torch.distributed.broadcast(spent, 0)
    return bool(spent.item())


def _ranks_in_sync(model: VAEGAN, world: int) -> bool:
    """Whether every rank holds the same weights (DDP's gradient averaging kept them together)."""
    local = torch.stack([p.detach().double().sum() for p in model.parameters()]).cpu()
    dev = next(model.parameters()).device
    bufs = [torch.empty_like(local).to(dev) for _ in range(world)]
    torch.distributed.all_gather(bufs, local.to(dev))
    return all(torch.allclose(b.cpu(), local, rtol=1e-6, atol=1e-9) for b in bufs)


@dataclasses.dataclass
class _Monitor:
    """Rank 0's record of a run: the metrics rows, the sample grids and quality checks, and the held-out faces,
    labelled faces and prior samples they use."""

    cfg: TrainConfig
    out: Path
    source: FaceSource
    device: torch.device
    t_start: float
    held: np.ndarray
    labelled: tuple[np.ndarray, np.ndarray] | None
    z_prior: torch.Tensor
    metrics: MetricsLog
    quality_log: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    t_last: float = 0.0
    n_last: int = 0

    @classmethod
    def start(cls, cfg: TrainConfig, out: Path, source: FaceSource, latent_size: int, device, t_start, resumed):
        """Write ``train_config.json`` and draw what the checks use (``resumed``: the step resumed from, or None)."""
        (out / "train_config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
        held, _ = source.held_out(cfg.n_held_out)
        labelled = _labelled_faces(source, cfg)
        z_prior = torch.randn(cfg.n_samples, latent_size, generator=torch.Generator().manual_seed(cfg.seed + 1))
        metrics = MetricsLog(out / "metrics.csv", resume_step=resumed)
        return cls(cfg, out, source, device, t_start, held, labelled, z_prior, metrics)

    def after_step(self, model: VAEGAN, step: int, losses: dict[str, float], bar) -> None:
        """A metrics row every ``log_every`` steps; a sample grid and a quality check every ``sample_every``."""
        cfg = self.cfg
        if step % cfg.log_every == 0 or step == cfg.steps:
            now = time.perf_counter()
            row = {"step": step, "seconds": now - self.t_start, "images_per_s": self.n_last / (now - self.t_last)}
            self.metrics.append({**row, **losses})
            bar.set_postfix(
                pix=f"{losses['pixel']:.4f}",
                feat=f"{losses['feature']:.4f}",
                kl=f"{losses['kl']:.1f}",
                dis=f"{losses['dis']:.2f}",
            )
            self.t_last, self.n_last = now, 0
        if step % cfg.sample_every == 0:
            _recalibrate(model, self.source, cfg, self.device)
            corr = _samples(model, self.held, self.z_prior, self.device, self.out / "samples" / f"step_{step:06d}.png")
            shutil.copyfile(self.out / "samples" / f"step_{step:06d}.png", self.out / "samples.png")
            q = {"step": step, "seconds": round(time.perf_counter() - self.t_start, 1)}
            q.update(_quality(model, self.source, self.labelled, corr, self.device))
            self.quality_log.append(q)
            _append_quality(self.out / "quality.csv", q)
            readout = q.get("attribute_readout_mean")
            bar.write(
                f"step {step}: held-out pixel correlation {corr:.3f}"
                + (f", attribute readout {readout:.3f} (balanced accuracy, mean)" if readout is not None else "")
            )

    def plateaued(self, step: int) -> bool:
        """Whether this step's quality check found a plateau (:func:`plateaued`)."""
        cfg = self.cfg
        return step % cfg.sample_every == 0 and plateaued(self.quality_log, cfg.plateau_checks, cfg.plateau_tol)

    def finish(self, model: VAEGAN, net_cfg, run: dict[str, Any]) -> dict[str, Any]:
        """The last samples, the held-out faces, the attribute directions, ``facespace.json`` and
        ``summary.json`` (``run``: steps, stopping, resumption, device and ranks); returns the summary."""
        out, device = self.out, self.device
        corr = _samples(model, self.held, self.z_prior, device, out / "samples.png")
        np.save(out / HELDOUT_FILE, self.held[:16])  # real faces for the export's parity check
        final = {"step": run["steps"], **_quality(model, self.source, self.labelled, corr, device)}
        quality = {**final, "history": self.quality_log, "stop_reason": run["stop_reason"]}
        summary = {
            "network": net_cfg.name,
            "latent_size": net_cfg.latent_size,
            "image_size": net_cfg.image_size,
            **run,
            "wall_s": round(time.perf_counter() - self.t_start, 2),
            "heldout_pixel_corr": corr,
            "n_held_out": int(len(self.held)),
            "data": self.source.describe(),
            "attribute_readout_mean": final.get("attribute_readout_mean"),
            **_attribute_directions(model, self.labelled, self.source.attribute_names, device, out),
        }
        write_vaegan_meta(out, net_cfg, self.source.framing, CHECKPOINT_FILE, quality=quality)
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        return summary


def _resume(ckpt: Path, net_cfg, model: VAEGAN, optimizers: dict, generator: torch.Generator, rank: int, device) -> int:
    """Load the checkpoint's weights, optimiser states and this rank's generator; returns its step."""
    stored, state = load_checkpoint(ckpt, expected=net_cfg, map_location=device)
    model.load_state_dict(stored.state_dict())
    for name, opt in optimizers.items():
        opt.load_state_dict(state["optimizers"][name])
    start = int(state["step"])
    gens = state["extra"].get("generators", [])
    if rank < len(gens):
        generator.set_state(gens[rank])
    _log(f"resuming {ckpt} at step {start}")
    return start


def train_vaegan(cfg: TrainConfig, out_dir: str | Path, resume: bool = False) -> dict[str, Any]:
    """Train (or, with ``resume``, continue training) a VAE-GAN into ``out_dir``; returns the run summary.

    ``out_dir`` must exist (the command prepares it). With ``resume`` the checkpoint in ``out_dir`` must have been
    written for the same network; training goes on up to ``cfg.steps``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    device, rank, world, distributed = setup_device(cfg.device)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    net_cfg = preset(cfg.network, cfg.latent_size)
    torch.manual_seed(cfg.seed)
    model = VAEGAN(net_cfg).to(device).train()
    optimizers = _make_optimizers(model, cfg)
    generator = torch.Generator().manual_seed(cfg.seed * 7919 + rank)
    ckpt = out / CHECKPOINT_FILE
    start = _resume(ckpt, net_cfg, model, optimizers, generator, rank, device) if resume else 0
    source = open_source(cfg.data, net_cfg.image_size, cfg.seed, cfg.n_held_out, cfg.folder_crop)
    for note in source.notes:
        _log(f"train-vaegan: {note}")
    monitor = None
    if rank == 0:
        _log(
            f"train-vaegan: {net_cfg.name} on {device} (world size {world}), data {source.name}, step {start} -> {cfg.steps}"
        )
        resumed = start if resume else None
        monitor = _Monitor.start(cfg, out, source, net_cfg.latent_size, device, t_start, resumed)

    nets = {"encoder": model.encoder, "decoder": model.decoder, "discriminator": model.discriminator}
    if distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if device.type == "cuda" else None
        nets = {k: DDP(v, device_ids=ids) for k, v in nets.items()}

    def checkpoint(step: int) -> None:
        state = generator.get_state()
        gens = [state]
        if distributed:  # every rank's generator, so each rank resumes its own random stream
            local = state.to(device)
            bufs = [torch.empty_like(local) for _ in range(world)]
            torch.distributed.all_gather(bufs, local)
            gens = [b.cpu() for b in bufs]
        if rank == 0:
            save_checkpoint(ckpt, model, step=step, optimizers=optimizers, extra={"generators": gens})

    from tqdm import tqdm

    bar = tqdm(
        total=cfg.steps, initial=start, disable=rank != 0 or os.environ.get("FMRIFACE_QUIET") == "1", file=sys.stderr
    )
    if monitor is not None:
        monitor.t_last = time.perf_counter()
    step = start
    stopped_early, stop_reason = False, "steps"
    # The next batch is drawn in a background thread while this one trains (decoding JPEGs or rendering faces
    # overlaps the network's work); batches are pure functions of the step, so this changes nothing else.
    pool = ThreadPoolExecutor(1)
    fetch = pool.submit(source.batch, start, cfg.batch_size, rank, world)
    for step in range(start + 1, cfg.steps + 1):
        images, _ = fetch.result()
        if step < cfg.steps:
            fetch = pool.submit(source.batch, step, cfg.batch_size, rank, world)
        losses = train_step(
            nets["encoder"],
            nets["decoder"],
            nets["discriminator"],
            optimizers,
            _to_tensor(images, device),
            cfg.weights,
            generator,
            distributed,
        )
        bar.update(1)
        plateau = False
        if monitor is not None:
            monitor.n_last += len(images) * world
            monitor.after_step(model, step, losses, bar)
            plateau = monitor.plateaued(step)
        if distributed:  # rank 0 decides for every rank, so they stop together
            flag = torch.tensor([float(plateau)], device=device)
            torch.distributed.broadcast(flag, 0)
            plateau = bool(flag.item())
        if plateau:
            stopped_early, stop_reason = step < cfg.steps, "plateau"
            if rank == 0:
                bar.write(f"step {step}: quality plateaued over the last {cfg.plateau_checks} checks: stopping")
            break
        if step % cfg.checkpoint_every == 0 and step != cfg.steps:
            checkpoint(step)
        if cfg.max_minutes > 0 and _budget_spent(t_start, cfg.max_minutes, distributed, device):
            stopped_early, stop_reason = step < cfg.steps, "max_minutes"
            break
    bar.close()
    pool.shutdown(wait=True)
    if rank == 0:
        _recalibrate(model, source, cfg, device)
    checkpoint(step)
    in_sync = _ranks_in_sync(model, world) if distributed else None
    summary: dict[str, Any] = {}
    if monitor is not None:
        run = {
            "steps": step,
            "stopped_early": stopped_early,
            "stop_reason": stop_reason,
            "resumed_from": start if resume else None,
            "device": str(device),
            "world_size": world,
            "ranks_in_sync": in_sync,
        }
        summary = monitor.finish(model, net_cfg, run)
    if distributed:
        torch.distributed.barrier()
    return summary
