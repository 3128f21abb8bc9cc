"""PsychoPy window pieces shared by the experiment and the display (psychopy is imported here, lazily)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["WindowConfig", "import_psychopy", "open_window", "FramePacer", "Painter", "StimulusError", "to_texture"]


class StimulusError(ValueError):
    """A stimulus file the experiment cannot show (missing, truncated, corrupt): named, before the run starts."""

    user_error = True


@dataclass(frozen=True)
class WindowConfig:
    """The PsychoPy window. ``pacing``: ``vsync`` (flip blocks on the refresh), ``sleep`` (flips paced at
    ``refresh_hz`` on an absolute schedule, for Xvfb or a screen without vsync), ``auto`` (measure)."""

    size: tuple[int, int] = (1024, 768)
    fullscr: bool = False
    screen: int = 0
    color: tuple[float, float, float] = (0.0, 0.0, 0.0)
    refresh_hz: float = 60.0
    pacing: str = "auto"
    face_size: int = 384

    def __post_init__(self) -> None:
        if self.pacing not in ("auto", "vsync", "sleep"):
            raise ValueError(f"window.pacing must be auto, vsync or sleep, got {self.pacing!r}")
        if self.refresh_hz <= 0 or self.face_size <= 0 or min(self.size) <= 0:
            raise ValueError("window.refresh_hz, window.face_size and window.size must be positive")


class PsychopyMissing(ImportError):
    user_error = True


def import_psychopy() -> tuple[Any, Any, Any]:
    """``(visual, core, event)``, quiet on the console; a clear message when psychopy is not installed."""
    try:
        from psychopy import core, event, logging, visual
    except ImportError as exc:
        raise PsychopyMissing(
            f"the stimulus programs need PsychoPy ({exc}); install it with `make install` or "
            "`pip install pyglet==1.5.27 && pip install --no-deps psychopy==2026.2.5`"
        ) from None
    logging.console.setLevel(logging.ERROR)
    return visual, core, event


def open_window(cfg: WindowConfig, title: str = "fmriface") -> Any:
    """A PsychoPy window in pixel units, as ``cfg`` asks (full screen, size, screen, colour)."""
    visual, _, _ = import_psychopy()
    return visual.Window(
        size=list(cfg.size), fullscr=cfg.fullscr, screen=cfg.screen, color=list(cfg.color), units="pix",
        allowGUI=not cfg.fullscr, checkTiming=False, title=title, autoLog=False,
    )  # fmt: skip


class FramePacer:
    """Predicts the next flip and keeps flips on the frame grid.

    With vsync (measured at start unless ``pacing`` says) the flip itself waits for the refresh: the next flip
    is predicted one measured refresh period after the last. Without (Xvfb, some drivers) :meth:`wait` sleeps
    until the next multiple of ``1 / refresh_hz`` after the first flip (an absolute schedule, no drift).
    """

    def __init__(self, win: Any, cfg: WindowConfig, clock: Any = time.perf_counter) -> None:
        self.period = 1.0 / cfg.refresh_hz
        self.clock = clock
        measured = _flip_interval(win, clock) if cfg.pacing != "sleep" else 0.0
        self.sleep = cfg.pacing == "sleep" or (cfg.pacing == "auto" and measured < 0.5 * self.period)
        if not self.sleep and measured > 0.5 * self.period:
            self.period = measured  # the screen's real refresh period
        self._t0: float | None = None
        self._last: float | None = None
        self._k = 0

    def next_flip(self) -> float:
        """Predicted time of the next flip."""
        now = self.clock()
        if self._t0 is None or self._last is None:
            return now
        if not self.sleep:
            return self._last + max(1, int(np.ceil((now - self._last) / self.period))) * self.period
        k = max(self._k + 1, int(np.floor((now - self._t0) / self.period)) + 1)
        return self._t0 + k * self.period

    def wait(self) -> float:
        """Sleep until the next frame boundary (sleep pacing only); returns the predicted flip time."""
        target = self.next_flip()
        if self.sleep:
            while (left := target - self.clock()) > 0:
                time.sleep(left - 0.0015 if left > 0.002 else 0)
        return target

    def anchor(self, t: float) -> None:
        """Put the sleep-paced grid on ``t`` (the first trigger), so scheduled onsets fall on frames; with vsync
        the grid is the screen's and onsets keep their phase (within half a frame)."""
        if self.sleep:
            self._t0, self._k = t, 0

    def flipped(self, t: float) -> None:
        """Record a flip's time (from ``win.callOnFlip``)."""
        if self._t0 is None:
            self._t0 = t
        self._last = t
        self._k = max(self._k + 1, int(round((t - self._t0) / self.period)))


def _flip_interval(win: Any, clock: Any, n: int = 12) -> float:
    """Median interval of ``n`` back-to-back flips (a refresh period with vsync, ~0 without)."""
    times = []
    for _ in range(n):
        win.flip()
        times.append(clock())
    return float(np.median(np.diff(times)))


def to_texture(image: np.ndarray) -> Any:
    """A ``uint8 H x W x 3`` image as a PIL image: PsychoPy shows those exactly, the right way up (its float
    arrays are ambiguous: 2026.2 reads them as [0, 1] though its messages say [-1, 1])."""
    from PIL import Image

    return Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))


_GLYPHS = "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 +-.:/>()[]"


class Painter:
    """The stimuli drawn on a window: fixation cross, faces, text, a feedback thermometer."""

    def __init__(self, win: Any, face_size: int) -> None:
        visual, _, _ = import_psychopy()
        self.win, self.face_size, self.visual = win, face_size, visual
        self.cross = visual.ShapeStim(
            win, vertices="cross", size=(24, 24), fillColor=(1, 1, 1), lineColor=None, autoLog=False
        )
        self.face = visual.ImageStim(win, size=(face_size, face_size), interpolate=True, autoLog=False)
        self.frame = visual.Rect(
            win, width=face_size, height=face_size, lineColor=(0.4, 0.4, 0.4), fillColor=None, lineWidth=2
        )
        self.text = visual.TextStim(win, text="", height=20, color=(1, 1, 1), wrapWidth=win.size[0] * 0.9)
        self._lines: list[Any] = []
        self._n_lines = 0
        self._texts: dict[tuple[str, float], Any] = {}
        self._images: dict[Any, tuple[np.ndarray, Any]] = {}
        self._image_key: Any = None
        h = face_size
        self.therm_box = visual.Rect(win, width=60, height=h, lineColor=(1, 1, 1), fillColor=None, lineWidth=3)
        self.therm_bar = visual.Rect(win, width=54, height=1, fillColor=(0.2, 0.9, 0.2), lineColor=None)

    def load(self, key: Any, path: str | Path) -> None:
        """Read an image file into its own texture, ready for ``draw_face(key=key)`` (before the run)."""
        from PIL import Image

        try:
            with Image.open(path) as im:
                image = np.asarray(im.convert("RGB"))
        except (OSError, ValueError, Image.DecompressionBombError) as exc:  # truncated, corrupt, not an image
            raise StimulusError(f"stimulus image {path} cannot be read: {exc}") from None
        stim = self.visual.ImageStim(self.win, image=to_texture(image), interpolate=True, autoLog=False)
        stim.size = self._fit(image)
        self._images[key] = (image, stim)

    def warm_up(self) -> None:
        """Draw every loaded texture once into the back buffer and clear it, so no first draw stalls a frame."""
        # An odd size: the first non-power-of-two texture costs ~0.3 s.
        self.face.image = to_texture(np.zeros((37, 29, 3), np.uint8))
        self.face.draw()
        self.text.text = _GLYPHS
        self.text.draw()
        self.draw_thermometer(0.5, 0.0, 1.0)
        self.draw_frame()
        self.draw_cross()
        for _, stim in self._images.values():
            stim.draw()
        for stim in self._texts.values():
            stim.draw()
        self.win.clearBuffer()

    def image(self, key: Any) -> np.ndarray:
        """A loaded image."""
        return self._images[key][0]

    def _fit(self, image: np.ndarray) -> tuple[float, float]:
        h, w = image.shape[:2]
        s = self.face_size / max(h, w)
        return (w * s, h * s)

    def draw_face(self, image: np.ndarray | None = None, key: Any = None, pos: tuple[float, float] = (0, 0)) -> None:
        """Draw a loaded image (``key`` only), or an array: its texture is uploaded again only when ``key``
        changes (always when ``key`` is None)."""
        if image is None:
            stim = self._images[key][1]
        else:
            stim = self.face
            if key is None or key != self._image_key:
                stim.image = to_texture(image)
                stim.size = self._fit(image)
                self._image_key = key
        stim.pos = pos
        stim.draw()

    def draw_cross(self) -> None:
        """Draw the fixation cross at the centre."""
        self.cross.draw()

    def draw_frame(self) -> None:
        """Draw the grey outline of the face's square at the centre."""
        self.frame.draw()

    def draw_text(self, text: str, pos: tuple[float, float] = (0, 0), height: float = 20, cache: bool = True) -> None:
        """Draw text. Laying out text is slow in PsychoPy (tens of ms), so fixed strings keep their own stimulus
        (``cache``); changing text (the operator's lines) reuses one stimulus."""
        if cache:
            stim = self._texts.get((text, height))
            if stim is None:
                stim = self.visual.TextStim(self.win, text=text, height=height, color=(1, 1, 1),
                                            wrapWidth=self.win.size[0] * 0.9, autoLog=False)  # fmt: skip
                self._texts[(text, height)] = stim
        else:
            stim = self.text
            if stim.text != text or stim.height != height:
                stim.text, stim.height = text, height
        stim.pos = pos
        stim.draw()

    def draw_lines(self, lines: list[str] | None, top: float, height: float = 16) -> None:
        """Left-aligned lines of changing text from ``top`` down, one stimulus per line (only a changed line is
        laid out again: that costs milliseconds)."""
        if lines is None:  # draw the lines as they were
            for stim in self._lines[: self._n_lines]:
                stim.draw()
            return
        self._n_lines = len(lines)
        while len(self._lines) < len(lines):  # laying out all glyphs once renders them into the font atlas
            self._lines.append(
                self.visual.TextStim(
                    self.win,
                    text=_GLYPHS,
                    height=height,
                    color=(1, 1, 1),
                    wrapWidth=self.win.size[0] * 2,
                    alignText="left",
                    anchorHoriz="left",
                    anchorVert="top",
                    autoLog=False,
                )
            )
        for i, line in enumerate(lines):
            stim = self._lines[i]
            if stim.text != line:
                stim.text = line
            stim.pos = (-self.win.size[0] / 2 + 10, top - (height + 6) * i)
            stim.draw()

    def draw_thermometer(
        self, value: float | None, lo: float, hi: float, pos: tuple[float, float] = (0, 0), new_text: bool = True
    ) -> None:
        """A vertical bar filled to ``(value - lo) / (hi - lo)``; an empty box while no value is known. With
        ``new_text`` False the number under it keeps what it showed last (laying it out costs milliseconds)."""
        h = self.face_size
        self.therm_box.pos = pos
        self.therm_box.draw()
        if value is not None:
            frac = float(np.clip((value - lo) / (hi - lo), 0.0, 1.0))
            bar_h = max(1.0, frac * (h - 6))
            self.therm_bar.height = bar_h
            self.therm_bar.pos = (pos[0], pos[1] - h / 2 + 3 + bar_h / 2)
            self.therm_bar.draw()
            if new_text:
                self.draw_text(f"{value:+.2f}", (pos[0], pos[1] - h / 2 - 24), 18, cache=False)
            else:
                self.text.draw()
