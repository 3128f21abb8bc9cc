"""Face sources: preprocessing, determinism, sharding and bad folders."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from offline.datasets import CorruptImageWarning, DataError, FolderSource, open_source, preprocess


def _write_images(folder: Path, n: int, rng: np.random.Generator, size=(23, 19)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        img = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        img[0, 0] = i  # the index, so order and identity are checkable
        p = folder / f"img_{i:03d}.png"
        Image.fromarray(img).save(p)
        paths.append(p)
    return paths


def test_preprocess_is_the_papers_celeba_crop() -> None:
    # Aligned CelebA is 178 wide, 218 high: central square 178, central 80% -> 142.4 px, here a marked box.
    img = np.zeros((218, 178, 3), np.uint8)
    top, left = (218 - 142) // 2, (178 - 142) // 2
    img[top : top + 142, left : left + 142] = 200
    out = preprocess(Image.fromarray(img), 32)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    assert out[1:-1, 1:-1].min() >= 150  # only the kept central 80% remains
    assert preprocess(Image.fromarray(img), 32, crop=False)[0, 0].max() == 0


def test_folder_batches_are_deterministic_sharded_and_hold_out(tmp_path: Path, rng: np.random.Generator) -> None:
    _write_images(tmp_path / "faces", 40, rng)
    src = open_source(f"folder:{tmp_path / 'faces'}", size=12, seed=3, n_held_out=4)
    assert src.attribute_names is None and any("attributes.csv" in n for n in src.notes)
    a, attrs = src.batch(step=2, batch_size=6)
    b, _ = src.batch(step=2, batch_size=6)
    assert a.shape == (6, 12, 12, 3) and attrs is None
    np.testing.assert_array_equal(a, b)
    r0, _ = src.batch(step=1, batch_size=5, rank=0, world_size=2)
    r1, _ = src.batch(step=1, batch_size=5, rank=1, world_size=2)
    assert not np.array_equal(r0, r1)
    held, _ = src.held_out(10)
    assert len(held) == 4
    # Over an epoch every training image is seen once, and never a held-out one.
    src_small = FolderSource(sorted((tmp_path / "faces").glob("*.png")), 12, seed=0, n_held_out=4, crop=False)
    seen = np.concatenate([src_small.batch(k, 6)[0] for k in range(6)])  # 36 = the training images
    held_small, _ = src_small.held_out(4)
    keys = {im.tobytes() for im in seen}
    assert len(keys) == 36 and not keys & {im.tobytes() for im in held_small}


def test_attribute_csv_is_aligned_by_name(tmp_path: Path, rng: np.random.Generator) -> None:
    _write_images(tmp_path, 20, rng)
    rows = ["image_id,Male,Smiling"] + [
        f"img_{i:03d}.png,{1 if i % 2 else -1},{1 if i < 10 else -1}" for i in range(20)
    ]
    (tmp_path / "attributes.csv").write_text("\n".join(rows) + "\n")
    src = open_source(f"folder:{tmp_path}", size=8, n_held_out=0)
    assert src.attribute_names == ("Male", "Smiling")
    np.testing.assert_array_equal(src._attrs[:4], [[-1, 1], [1, 1], [-1, 1], [1, 1]])
    _, attrs = src.batch(0, 5)
    assert attrs.shape == (5, 2) and set(np.unique(attrs)) <= {-1, 1}


def test_empty_missing_and_bad_spec(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match="holds no images"):
        open_source(f"folder:{tmp_path / 'empty'}", 16)
    with pytest.raises(DataError, match="not a folder"):
        open_source(f"folder:{tmp_path / 'nope'}", 16)
    with pytest.raises(DataError, match="expected procedural"):
        open_source("imagenet:/x", 16)


def test_corrupt_image_is_skipped_counted_and_warned_once(tmp_path: Path, rng: np.random.Generator) -> None:
    _write_images(tmp_path, 12, rng)
    (tmp_path / "img_003.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (tmp_path / "img_007.png").write_bytes(b"")
    src = open_source(f"folder:{tmp_path}", size=8, n_held_out=0)
    with pytest.warns(CorruptImageWarning, match=r"img_00[37]\.png") as record:
        images, _ = src.batch(0, 12)
    assert len([w for w in record if issubclass(w.category, CorruptImageWarning)]) == 1
    assert images.shape == (12, 8, 8, 3)  # filled up with readable images
    assert src.n_corrupt == 2 and any("2 unreadable" in n for n in src.notes)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        src.batch(1, 12)  # no second warning


def test_all_images_corrupt_is_an_error(tmp_path: Path) -> None:
    for i in range(3):
        (tmp_path / f"bad{i}.jpg").write_bytes(b"not a jpeg")
    src = open_source(f"folder:{tmp_path}", size=8, n_held_out=0)
    with pytest.warns(CorruptImageWarning), pytest.raises(DataError, match="no readable image"):
        src.batch(0, 2)


def test_celeba_folder_with_and_without_attributes(tmp_path: Path, rng: np.random.Generator) -> None:
    img_dir = tmp_path / "img_align_celeba"
    img_dir.mkdir()
    for i in range(1, 13):
        Image.fromarray(rng.integers(0, 256, (218, 178, 3), dtype=np.uint8)).save(img_dir / f"{i:06d}.jpg")
    src = open_source(f"celeba:{tmp_path}", size=16, n_held_out=2)
    assert src.attribute_names is None
    assert any("list_attr_celeba.txt" in n and "without attributes" in n for n in src.notes)
    lines = ["12", "Male Smiling Eyeglasses"] + [f"{i:06d}.jpg  {1 if i % 3 == 0 else -1} -1  1" for i in range(1, 13)]
    (tmp_path / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    src = open_source(f"celeba:{tmp_path}", size=16, n_held_out=2)
    assert src.attribute_names == ("Male", "Smiling", "Eyeglasses") and not src.notes
    images, attrs = src.batch(0, 4)
    assert images.shape == (4, 16, 16, 3) and attrs.shape == (4, 3)
    assert src.crop  # photographs get the paper's crop


def test_procedural_source_is_deterministic_and_holds_out_unseen_faces() -> None:
    src = open_source("procedural", size=32, seed=7)
    a, attrs = src.batch(3, 4)
    b, _ = src.batch(3, 4)
    c, _ = src.batch(4, 4)
    assert a.shape == (4, 32, 32, 3) and a.dtype == np.uint8 and attrs.dtype == np.int8
    assert "Male" in src.attribute_names and attrs.shape == (4, len(src.attribute_names))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    held, _ = src.held_out(3)
    assert not any(np.array_equal(h, x) for h in held for x in np.concatenate([a, c]))
