"""What the fit and the service must agree on: one :class:`PreprocessSpec`, and the trial estimators by name.

The mapping standardises its input with the training trials' mean and scale, so the live service must compute
its patterns exactly as the fit did: the same resampling kernel, the same detrending (polynomial order, motion
regressors), the same scaling, the same trial window and the same kind of trial estimate. Those settings are one
frozen value, :class:`PreprocessSpec`. The fit's config embeds it (``[preprocess]``), the bundle records it
(``manifest.json``: ``estimate``, ``interpolation``, ``window``, ``preprocessing``; :meth:`PreprocessSpec.
to_manifest`), and ``serve`` takes the bundle's (:meth:`PreprocessSpec.from_manifest`); a serve config that
states a spec of its own is compared with the bundle's as one value at start (:meth:`PreprocessSpec.differences`).

A trial estimator is an :class:`Estimator` registered by name in :data:`ESTIMATORS`. Each knows its offline form
(the function the fit calls on a whole realigned run, named as ``module:function`` because it may need libraries
the service never imports, such as nilearn's design matrices) and whether the service can compute it live.
Adding one (least-squares-separate, say) is one :func:`register_estimator` call here and its two forms.

numpy only: the service imports this module.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.lss import LSSOptions
from service.online import SCALES, OnlinePreprocessor, detrend_offline
from service.window import WindowSpec

__all__ = [
    "PreprocessSpec",
    "Estimator",
    "ESTIMATORS",
    "INTERPOLATIONS",
    "register_estimator",
    "get_estimator",
    "online_estimators",
]

#: The resampling kernels of motion correction (``service.motion``).
INTERPOLATIONS = ("linear", "cubic")


@dataclass(frozen=True)
class Estimator:
    """One kind of single-trial estimate.

    Parameters
    ----------
    name : str
        What configs, manifests and evaluation keys call it.
    description : str
        One line for reports and error messages.
    offline : str
        ``module:function`` of its offline form, called by the fit on each realigned run; resolved by
        :meth:`offline_function` (the service never resolves it).
    online : bool
        True when ``serve`` computes it live (:class:`service.live.trials.TrialBook`).
    """

    name: str
    description: str
    offline: str
    online: bool = False

    def offline_function(self) -> Callable[..., Any]:
        """The offline form, imported on first use."""
        module, _, func = self.offline.partition(":")
        return getattr(importlib.import_module(module), func)


#: Every trial estimator, by name.
ESTIMATORS: dict[str, Estimator] = {}


def register_estimator(estimator: Estimator) -> Estimator:
    """Add ``estimator`` to :data:`ESTIMATORS` (a name registered twice is an error)."""
    if estimator.name in ESTIMATORS:
        raise ValueError(f"a trial estimator named {estimator.name!r} is already registered")
    ESTIMATORS[estimator.name] = estimator
    return estimator


def get_estimator(name: str) -> Estimator:
    """The estimator called ``name``; a ValueError lists the known ones."""
    try:
        return ESTIMATORS[name]
    except KeyError:
        raise ValueError(f"unknown trial estimate {name!r}: one of {', '.join(ESTIMATORS)}") from None


def online_estimators() -> list[str]:
    """The names of the estimators ``serve`` computes live."""
    return [name for name, est in ESTIMATORS.items() if est.online]


register_estimator(
    Estimator(
        "window",
        "the mean of the volumes in the response window minus the pre-onset baseline (service.window)",
        "offline.decoding.estimates:window_patterns",
        online=True,
    )
)
register_estimator(
    Estimator(
        "glm",
        "least-squares-all GLM betas, one regressor per image (nilearn's design matrices)",
        "offline.decoding.estimates:glm_patterns",
    )
)
register_estimator(
    Estimator(
        "lss",
        "least-squares-separate GLM betas, one GLM per trial against the rest of its condition (service.lss)",
        "offline.decoding.estimates:lss_patterns",
        online=True,  # service.live.trials.TrialBook: on the volumes so far, once the lag is in
    )
)


@dataclass(frozen=True)
class PreprocessSpec:
    """How a run's volumes become trial patterns: what the fit used and the service must repeat.

    Parameters
    ----------
    estimate : str
        The trial estimator (a name in :data:`ESTIMATORS`).
    window : WindowSpec
        The trial window and baseline, seconds after onset.
    poly_order : int
        Legendre drift terms of the detrending, up to this order.
    motion_regressors : bool
        The six motion parameters are regressors of the detrending.
    scale : {"psc", "zscore", "none"}
        Per-voxel scaling of the residuals (:data:`service.online.SCALES`).
    interpolation : {"linear", "cubic"}
        The kernel each volume is resampled with onto the reference grid.
    lss : LSSOptions
        The least-squares-separate estimate's lag, drift, oversampling and output (:mod:`service.lss`); the
        manifest records them when ``estimate`` is ``"lss"``.
    """

    estimate: str = "window"
    window: WindowSpec = field(default_factory=WindowSpec)
    poly_order: int = 2
    motion_regressors: bool = True
    scale: str = "psc"
    interpolation: str = "linear"
    lss: LSSOptions = field(default_factory=LSSOptions)

    def __post_init__(self) -> None:
        get_estimator(self.estimate)
        if self.scale not in SCALES:
            raise ValueError(f"scale must be one of {', '.join(SCALES)}, got {self.scale!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {self.interpolation!r}")
        if self.poly_order < 0:
            raise ValueError(f"poly_order must be >= 0, got {self.poly_order}")

    @property
    def estimator(self) -> Estimator:
        """The registered :class:`Estimator` of ``estimate``."""
        return get_estimator(self.estimate)

    def replace(self, **changes: Any) -> PreprocessSpec:
        """A copy with ``changes`` (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)

    # --- the two forms of the detrending ------------------------------------------------------------------

    def detrend(self, x: np.ndarray, motion: np.ndarray | None, exclude: np.ndarray | None = None) -> np.ndarray:
        """A whole run's residuals ``[T, V]``, scaled: the offline form of :meth:`online_preprocessor` (``exclude``:
        the censored volumes, left out of the fit and the scale as the service skips them)."""
        return detrend_offline(
            x, motion if self.motion_regressors else None, poly_order=self.poly_order, scale=self.scale, exclude=exclude
        )

    def online_preprocessor(self, n_voxels: int, min_volumes: int = 10) -> OnlinePreprocessor:
        """The incremental detrending and scaling the service runs volume by volume."""
        return OnlinePreprocessor(
            n_voxels, self.poly_order, self.motion_regressors, min_volumes=min_volumes, scale=self.scale
        )

    # --- the bundle's record ------------------------------------------------------------------------------

    def to_manifest(self) -> dict[str, Any]:
        """The manifest's fields for this spec (``window``, ``estimate``, ``interpolation``, ``preprocessing``; and
        ``lss`` for an LSS bundle)."""
        lss = {"lss": self.lss.as_dict()} if self.estimate == "lss" else {}
        return {
            **lss,
            "window": self.window.as_dict(),
            "estimate": self.estimate,
            "interpolation": self.interpolation,
            "preprocessing": {
                "detrend": (
                    "per run: Legendre drift"
                    + (" + the 6 motion parameters within the session" if self.motion_regressors else "")
                    + " (service.online.detrend_offline)"
                ),
                "poly_order": self.poly_order,
                "motion_regressors": self.motion_regressors,
                "scale": self.scale,
                "standardise": "then (x - x_mean) / x_scale over the training trials' window estimates",
            },
        }

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> PreprocessSpec:
        """The spec a bundle's manifest records; a field an older manifest lacks takes its default."""
        pre = manifest.get("preprocessing") or {}
        window = manifest.get("window") or {}
        known = {f.name for f in dataclasses.fields(WindowSpec)}
        kwargs: dict[str, Any] = {
            "estimate": str(manifest.get("estimate") or "window"),
            "interpolation": str(manifest.get("interpolation") or "linear"),
            "window": WindowSpec(**{k: float(v) for k, v in window.items() if k in known}),
        }
        for key in ("poly_order", "motion_regressors", "scale"):
            if key in pre:
                kwargs[key] = pre[key]
        if manifest.get("lss"):
            known = {f.name for f in dataclasses.fields(LSSOptions)}
            kwargs["lss"] = LSSOptions(**{k: v for k, v in manifest["lss"].items() if k in known})
        return cls(**kwargs)

    def differences(self, other: PreprocessSpec, ignore: tuple[str, ...] = ()) -> list[str]:
        """``key = mine (theirs: other's)`` for every setting that differs; the window's fields one by one."""
        mine, theirs = _flat(self), _flat(other)
        return [
            f"{key} = {mine[key]!r} (the bundle's: {theirs.get(key)!r})"
            for key in mine
            if key not in ignore and mine[key] != theirs.get(key)
        ]


def _flat(spec: PreprocessSpec) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(spec):
        value = getattr(spec, f.name)
        if f.name == "lss" and spec.estimate != "lss":
            continue  # the LSS settings matter to an LSS estimate only
        if isinstance(value, (WindowSpec, LSSOptions)):
            out.update({f"{f.name}.{k}": v for k, v in value.as_dict().items()})
        else:
            out[f.name] = value
    return out
