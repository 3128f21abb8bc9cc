"""From fMRI runs to a bundle: realignment and trial estimates, voxel selection, brain -> latent mappings, the
evaluation (pairwise identification, gender, imagery, permutations) and the bundle writer; ``fit`` runs it all.

Public names are taken from their modules on first use (``lazy_loader``), so importing one of them (the bundle
writer, say) loads neither nilearn nor the other modules.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "bundle_writer": ["LinearMap", "AttributeDirections", "StimulusLatents", "write_bundle"],
        "patterns": ["TrialPatterns", "EstimatePatterns"],
        "facespaces": ["FaceSpaces"],
        "released": [
            "Ds001761Error",
            "ReleasedDecoder",
            "find_subject_dir",
            "read_decoder",
            "read_patterns",
            "evaluate_subject",
        ],
        "estimates": [
            "RealignedRun",
            "iter_realigned",
            "realign_subject",
            "trials_of",
            "EstimateOptions",
            "window_patterns",
            "glm_patterns",
            "lss_patterns",
            "face_contrast",
            "contrast_terms",
            "combine_contrasts",
            "average_by_stimulus",
        ],
        "evaluate": [
            "PairwiseResult",
            "pairwise_accuracy",
            "correlation_matrix",
            "binomial_p",
            "gender_by_projection",
            "gender_by_classifier",
            "gender_classifier",
            "permutation_control",
            "score_spaces",
            "trialwise_identification",
            "evaluate_decoders",
        ],
        "mapping": [
            "RidgeMapping",
            "EncodingMapping",
            "make_mapping",
            "centred_correlation",
            "cv_splits",
            "ridge_predictions",
            "ridge_weights",
            "standardise",
            "Split",
            "PenaltyPath",
            "TargetFactors",
            "fit_shared",
            "DEFAULT_ALPHAS",
        ],
        "selection": [
            "Selection",
            "SelectionConfig",
            "RANKINGS",
            "encoding_scores",
            "top_k",
            "mask_selection",
            "select_voxels",
            "nested_ridge_predictions",
        ],
    },
)
