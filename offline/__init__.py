"""Everything that runs before the scan: face data, the VAE-GAN and PCA face spaces, the digital-twin
subject, BIDS loading, trial estimates, voxel selection, mappings, evaluation, reports and the bundle.

Public names are imported on first use, so ``offline.twin`` or ``offline.faces`` never pull in torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ATTRIBUTE_NAMES": "offline.faces",
    "PARAM_NAMES": "offline.faces",
    "sample_params": "offline.faces",
    "render_faces": "offline.faces",
    "iter_faces": "offline.faces",
    "write_faces": "offline.faces",
    "make_anatomy": "offline.twin",
    "simulate": "offline.twin",
    "FaceSpace": "offline.facespace",
    "load_facespace": "offline.facespace",
    "perceptual_features": "offline.facespace",
    "attribute_directions": "offline.facespace",
    "PCAFaceSpace": "offline.facespace.pca",
    "fit_pca": "offline.facespace.pca",
    "TrainConfig": "offline.training.vaegan",
    "train_vaegan": "offline.training.vaegan",
    "open_source": "offline.datasets",
    "load_bids": "offline.datasets.bids",
    "BidsSubject": "offline.datasets.bids",
    "BidsRun": "offline.datasets.bids",
    "realign_subject": "offline.decoding.estimates",
    "window_patterns": "offline.decoding.estimates",
    "glm_patterns": "offline.decoding.estimates",
    "select_voxels": "offline.decoding.selection",
    "RidgeMapping": "offline.decoding.mapping",
    "EncodingMapping": "offline.decoding.mapping",
    "pairwise_accuracy": "offline.decoding.evaluate",
    "score_spaces": "offline.decoding.evaluate",
    "permutation_control": "offline.decoding.evaluate",
    "FitConfig": "offline.fit",
    "run_fit": "offline.fit",
    "write_bundle": "offline.decoding.bundle_writer",
    "evaluate_subject": "offline.decoding.ds001761",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return __all__
