"""The headless display's frame saver: PNGs and frames.tsv written off the display's thread, in order, all of
them by close(), and a failing write recorded without stopping the display."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from PIL import Image

from stimulus.display import _FrameSaver


def _shown(seq):
    return SimpleNamespace(topic="frame", run_id="r1", seq=seq, volume=seq, received=100.0 + seq)


def test_frames_are_written_in_order_and_all_by_close(tmp_path):
    saver = _FrameSaver(tmp_path / "frames")
    win = SimpleNamespace(movieFrames=[])
    for seq in range(30):
        win.movieFrames.append(Image.fromarray(np.full((40, 60, 3), seq, np.uint8)))
        saver.save(win, f"{seq:05d}.png", _shown(seq), (1000.0 + seq, 0.0))
        assert win.movieFrames == []
    win.movieFrames.append(Image.fromarray(np.zeros((40, 60, 3), np.uint8)))
    saver.save(win, None, None, None)  # a status redraw: kept as status.png, no row
    saver.save(win, "nothing.png", None, None)  # no frame captured: nothing written
    saver.close()
    rows = (tmp_path / "frames" / "frames.tsv").read_text().splitlines()
    assert len(rows) == 31 and [r.split("\t")[0] for r in rows[1:]] == [f"{s:05d}.png" for s in range(30)]
    assert np.asarray(Image.open(tmp_path / "frames" / "00029.png"))[0, 0, 0] == 29
    assert (tmp_path / "frames" / "status.png").is_file() and not (tmp_path / "frames" / "nothing.png").exists()
    assert saver.error is None


def test_a_failing_write_is_recorded_and_later_frames_still_saved(tmp_path):
    saver = _FrameSaver(tmp_path / "frames")
    win = SimpleNamespace(movieFrames=[])
    for seq, name in enumerate(["missing-folder/a.png", "b.png"]):
        win.movieFrames.append(Image.fromarray(np.zeros((8, 8, 3), np.uint8)))
        saver.save(win, name, _shown(seq), (1.0, 0.0))
    saver.close()
    assert isinstance(saver.error, FileNotFoundError) and "missing-folder" in str(saver.error)
    assert (tmp_path / "frames" / "b.png").is_file()
