"""Everything that runs before the scan: face data, the VAE-GAN and PCA face spaces, the digital-twin
subject, BIDS loading, trial estimates, voxel selection, mappings, evaluation, reports and the bundle.

Public names are imported on first use (``lazy_loader``), so ``offline.twin`` or ``offline.faces`` never pull in
torch.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "faces": ["ATTRIBUTE_NAMES", "PARAM_NAMES", "sample_params", "render_faces", "iter_faces", "write_faces"],
        "twin": ["make_anatomy", "simulate"],
        "facespace": [
            "FaceSpace",
            "load_facespace",
            "perceptual_features",
            "attribute_directions",
            "PCAFaceSpace",
            "fit_pca",
        ],
        "training": ["TrainConfig", "train_vaegan"],
        "datasets": ["open_source", "load_bids", "BidsSubject", "BidsRun"],
        "decoding": [
            "realign_subject",
            "window_patterns",
            "glm_patterns",
            "select_voxels",
            "RidgeMapping",
            "EncodingMapping",
            "pairwise_accuracy",
            "score_spaces",
            "permutation_control",
            "write_bundle",
            "evaluate_subject",
        ],
        "fit": ["FitConfig", "run_fit"],
    },
)
