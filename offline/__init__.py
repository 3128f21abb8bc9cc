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
    "PCAFaceSpace": "offline.pca",
    "fit_pca": "offline.pca",
    "TrainConfig": "offline.vaegan_train",
    "train_vaegan": "offline.vaegan_train",
    "open_source": "offline.datasets",
    "load_bids": "offline.bids",
    "BidsSubject": "offline.bids",
    "BidsRun": "offline.bids",
    "realign_subject": "offline.estimates",
    "window_patterns": "offline.estimates",
    "glm_patterns": "offline.estimates",
    "select_voxels": "offline.selection",
    "RidgeMapping": "offline.mapping",
    "EncodingMapping": "offline.mapping",
    "pairwise_accuracy": "offline.evaluate",
    "score_spaces": "offline.evaluate",
    "permutation_control": "offline.evaluate",
    "FitConfig": "offline.fit",
    "run_fit": "offline.fit",
    "write_bundle": "offline.bundle_writer",
    "evaluate_subject": "offline.ds001761",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return __all__
