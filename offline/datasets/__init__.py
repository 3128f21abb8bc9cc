"""Data sets: face image sources (procedural, CelebA, image folders), BIDS subjects and the authors' ds001761."""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "bids": ["BidsError", "BidsRun", "BidsSubject", "bold_files", "load_bids", "load_stimuli", "stimulus_table"],
        "checks": ["check_inputs"],
        "images": [
            "DataError",
            "CorruptImageWarning",
            "list_images",
            "preprocess",
            "load_images",
            "read_celeba_attributes",
            "read_attribute_csv",
            "IMAGE_SUFFIXES",
        ],
        "sources": ["FaceSource", "ProceduralSource", "FolderSource", "open_source"],
    },
)
