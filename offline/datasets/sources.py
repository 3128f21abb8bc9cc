"""Face image sources for training and encoding: procedural faces, a CelebA folder, any image folder.

Every source yields batches that are a pure function of ``(seed, step, rank)``, so a resumed or distributed run
sees exactly the images an uninterrupted single run would have seen, and holds out a fixed set of faces that
training never sees (for sample grids and the held-out reconstruction score).

Preprocessing of real photographs follows the paper (docs/paper.md): central square crop, keep the central 80%
(trim 10% per side), resize to the network's size. Aligned CelebA (178x218) thus becomes a 144x144 crop.

Examples
--------
>>> src = open_source("procedural", size=64, seed=0)  # doctest: +SKIP
>>> images, attributes = src.batch(step=0, batch_size=16)
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

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

__all__ = [
    "DataError",
    "CorruptImageWarning",
    "FaceSource",
    "ProceduralSource",
    "FolderSource",
    "open_source",
    "preprocess",
    "list_images",
    "load_images",
    "IMAGE_SUFFIXES",
]


def _derive_seed(*parts: int) -> int:
    """A 32-bit seed from integers, independent streams for distinct tuples."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1)[0])


class FaceSource(ABC):
    """A source of RGB faces ``uint8 [B, S, S, 3]`` with optional attributes ``int8 [B, A]`` (1 / -1)."""

    name: str = "faces"
    size: int
    attribute_names: tuple[str, ...] | None = None
    #: How images are framed before resizing (:data:`service.framing.FRAMINGS`); the face space records
    #: it so that ``fit`` frames the experiment's stimuli the same way.
    framing: str = "resize"

    def __init__(self) -> None:
        #: Things the user should be told (missing attribute file, skipped images).
        self.notes: list[str] = []

    @abstractmethod
    def batch(
        self, step: int, batch_size: int, rank: int = 0, world_size: int = 1
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Rank ``rank``'s share of global batch ``step`` (``batch_size`` images per rank)."""

    @abstractmethod
    def held_out(self, n: int) -> tuple[np.ndarray, np.ndarray | None]:
        """``n`` faces never used for training (fewer if the source is small), with their attributes."""

    def describe(self) -> dict:
        """A JSON-friendly summary for the run's records."""
        return {
            "source": self.name,
            "size": self.size,
            "attributes": list(self.attribute_names or ()),
            "framing": self.framing,
            "notes": self.notes,
        }


class ProceduralSource(FaceSource):
    """Procedural faces rendered on the fly by :func:`offline.faces.iter_faces` (a new face every time)."""

    name = "procedural"

    def __init__(self, size: int, seed: int = 0) -> None:
        super().__init__()
        from offline import faces

        self._faces = faces
        self.size = size
        self.seed = seed
        self.attribute_names = tuple(faces.ATTRIBUTE_NAMES)

    def batch(self, step: int, batch_size: int, rank: int = 0, world_size: int = 1):
        """``batch_size`` new faces for this rank and step (a seed derived from seed, step, rank and world size)."""
        it = self._faces.iter_faces(batch_size, self.size, _derive_seed(self.seed, 1, step, rank, world_size))
        images, attributes = next(it)
        return np.ascontiguousarray(images), np.asarray(attributes, dtype=np.int8)

    def held_out(self, n: int):
        """``n`` faces from a seed stream that training batches never draw from."""
        # Stream 2 is never used for training batches (stream 1), so these faces are unseen.
        images, attributes = next(self._faces.iter_faces(n, self.size, _derive_seed(self.seed, 2)))
        return np.ascontiguousarray(images), np.asarray(attributes, dtype=np.int8)


class FolderSource(FaceSource):
    """Images of a folder (recursively), optionally with an attribute table; the last few are held out.

    Parameters
    ----------
    files : list of Path
        The images, in a fixed order.
    size : int
        Side of the preprocessed square images.
    seed : int
        Seed of the per-epoch shuffles.
    attributes : (names, array [len(files), A]) or None
        Attributes of each file, 1 / -1.
    n_held_out : int
        Number of files (at the end of the list) held out from training; at most a tenth of the folder.
    cache_limit : int
        Keep preprocessed images in memory when the folder has at most this many.
    crop : bool
        Apply the paper's central crop (photographs; docs/paper.md); False only resizes (already framed faces).
    """

    def __init__(
        self,
        files: list[Path],
        size: int,
        seed: int = 0,
        attributes: tuple[tuple[str, ...], np.ndarray] | None = None,
        n_held_out: int = 64,
        name: str = "folder",
        cache_limit: int = 20000,
        crop: bool = True,
    ) -> None:
        super().__init__()
        self.name = name
        self.files = list(files)
        self.size = size
        self.seed = seed
        self.crop = crop
        self.attribute_names, self._attrs = (None, None) if attributes is None else attributes
        n_held = min(n_held_out, len(self.files) // 10)
        self._train = np.arange(len(self.files) - n_held)
        self._held = np.arange(len(self.files) - n_held, len(self.files))
        self._cache: dict[int, np.ndarray] | None = {} if len(self.files) <= cache_limit else None
        self._bad: set[int] = set()
        self._warned = False

    @property
    def framing(self) -> str:
        """``central-80`` when the paper's central crop is applied before resizing, else ``resize``."""
        return "central-80" if self.crop else "resize"

    @property
    def n_corrupt(self) -> int:
        """Images skipped so far because they could not be read."""
        return len(self._bad)

    def _load(self, idx: list[int]) -> list[np.ndarray | None]:
        """Preprocessed images of file indices ``idx`` (None for unreadable ones, which are warned about once)."""
        cached = self._cache if self._cache is not None else {}
        todo = [i for i in dict.fromkeys(idx) if i not in self._bad and i not in cached]
        fresh: dict[int, np.ndarray] = {}
        for i, (img, err) in zip(todo, load_images([self.files[i] for i in todo], self.size, self.crop)):
            if img is None:
                self._bad.add(i)
                if not self._warned:
                    self._warned = True
                    warnings.warn(
                        f"skipping unreadable image {self.files[i]} ({err}); further ones are counted, not named",
                        CorruptImageWarning,
                        stacklevel=4,
                    )
            else:
                fresh[i] = img
                if self._cache is not None:
                    self._cache[i] = img
        return [None if i in self._bad else fresh[i] if i in fresh else cached[i] for i in idx]

    def _gather(self, order: np.ndarray, start: int, count: int) -> tuple[np.ndarray, np.ndarray | None]:
        """``count`` readable images taken from ``order`` (cyclically) from position ``start``."""
        images, rows = [], []
        pos = start
        while len(images) < count:
            if len(self._bad) >= len(order) or pos - start > 4 * len(order) + count:
                raise DataError(f"no readable image among the {len(order)} files of the {self.name} source")
            want = [int(order[(pos + k) % len(order)]) for k in range(count - len(images))]
            pos += len(want)
            for i, img in zip(want, self._load(want)):
                if img is not None:
                    images.append(img)
                    rows.append(i)
        if self._bad:
            note = f"{len(self._bad)} unreadable image(s) skipped"
            self.notes = [n for n in self.notes if "unreadable" not in n] + [note]
        attrs = None if self._attrs is None else self._attrs[rows]
        return np.stack(images), attrs

    def batch(self, step: int, batch_size: int, rank: int = 0, world_size: int = 1):
        """This rank's share of global batch ``step``: consecutive positions in a stream of shuffled epochs.

        Each epoch's order is a pure function of seed and epoch, so a resumed run draws the same batches; unreadable
        images are skipped and replaced by the next ones.
        """
        n = len(self._train)
        if n == 0:
            raise DataError(f"the {self.name} source has no training images")
        first = (step * world_size + rank) * batch_size  # position in the infinite stream of shuffled epochs
        epoch, offset = divmod(first, n)
        order = self._train[np.random.default_rng(_derive_seed(self.seed, 3, epoch)).permutation(n)]
        if offset + batch_size > n:  # the batch straddles two epochs
            nxt = self._train[np.random.default_rng(_derive_seed(self.seed, 3, epoch + 1)).permutation(n)]
            order = np.concatenate([order, nxt])
        return self._gather(order, offset, batch_size)

    def held_out(self, n: int):
        """Up to ``n`` of the held-out files (the training files when none are held out), in file order."""
        pool = self._held if len(self._held) else self._train
        return self._gather(pool[: min(n, len(pool))], 0, min(n, len(pool)))

    def describe(self) -> dict:
        """The base summary plus the number of images, training, held-out and unreadable ones."""
        d = super().describe()
        d.update(
            n_images=len(self.files), n_train=len(self._train), n_held_out=len(self._held), n_corrupt=self.n_corrupt
        )
        return d


def open_source(spec: str, size: int, seed: int = 0, n_held_out: int = 64, folder_crop: bool = False) -> FaceSource:
    """The face source named by ``spec``: ``procedural``, ``celeba:PATH`` or ``folder:PATH``.

    ``celeba:PATH`` expects ``PATH/img_align_celeba/*.jpg`` (or PATH itself holding the jpgs) and
    ``list_attr_celeba.txt`` beside it; without the attribute file it trains without attributes and says so in
    ``notes``. ``folder:PATH`` takes every image below PATH; an ``attributes.csv`` (``image_id`` then 1/-1
    columns, as ``fmriface faces`` writes) provides attributes. CelebA photographs get the paper's central crop
    (docs/paper.md); folder images only with ``folder_crop`` (by default they are taken as already framed faces and
    only resized).

    Raises
    ------
    DataError
        Unknown spec, missing, empty or image-less folder.
    """
    kind, _, arg = spec.partition(":")
    if kind == "procedural" and not arg:
        return ProceduralSource(size, seed)
    if kind not in ("celeba", "folder") or not arg:
        raise DataError(f"--data {spec!r}: expected procedural, celeba:PATH or folder:PATH")
    root = Path(arg).expanduser()
    if not root.is_dir():
        raise DataError(f"--data {spec!r}: {root} is not a folder")
    notes: list[str] = []
    if kind == "celeba":
        img_dir = root / "img_align_celeba" if (root / "img_align_celeba").is_dir() else root
        files = list_images(img_dir, recursive=False)
        attr_file = next(
            (p for p in (root / "list_attr_celeba.txt", img_dir.parent / "list_attr_celeba.txt") if p.is_file()), None
        )
        if attr_file is None:
            attributes = None
            notes.append(f"no list_attr_celeba.txt in {root}: training without attributes (no attribute directions)")
        else:
            attributes = read_celeba_attributes(attr_file, files)
    else:
        files = list_images(root, recursive=True)
        csv = root / "attributes.csv"
        attributes = read_attribute_csv(csv, files) if csv.is_file() else None
        if attributes is None:
            notes.append(f"no attributes.csv in {root}: training without attributes (no attribute directions)")
    crop = kind == "celeba" or folder_crop
    source = FolderSource(files, size, seed, attributes, n_held_out=n_held_out, name=kind, crop=crop)
    source.notes.extend(notes)
    return source
