"""Data sets: face image sources (procedural, CelebA, image folders), BIDS subjects and the authors' ds001761."""

from offline.datasets.bids import BidsError, BidsRun, BidsSubject, load_bids, load_stimuli, stimulus_table
from offline.datasets.images import (
    IMAGE_SUFFIXES,
    CorruptImageWarning,
    DataError,
    list_images,
    load_images,
    preprocess,
    read_attribute_csv,
    read_celeba_attributes,
)
from offline.datasets.sources import FaceSource, FolderSource, ProceduralSource, open_source

__all__ = [
    "BidsError",
    "BidsRun",
    "BidsSubject",
    "load_bids",
    "load_stimuli",
    "stimulus_table",
    "DataError",
    "CorruptImageWarning",
    "list_images",
    "preprocess",
    "load_images",
    "read_celeba_attributes",
    "read_attribute_csv",
    "IMAGE_SUFFIXES",
    "FaceSource",
    "ProceduralSource",
    "FolderSource",
    "open_source",
]
