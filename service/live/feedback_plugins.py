"""Feedback signals as plugins: found by name, run within a time budget, disabled for the run when they fail.

A feedback signal is an object made by a factory ``factory(context, **options)``
(:class:`service.live.feedback.SignalContext`: the bundle's latent size, attribute directions, stimuli) with

- ``frame(latent) -> dict``: the feedback of one volume's latent ``float32 [L]``;
- ``trial(latent) -> dict``: the feedback of one trial's latent;
- optionally ``set_target(latent, source)`` and ``clear_target()``: the neurofeedback target changed.

The dict returned is merged into the message's ``feedback`` (beside ``projections``); its ``value`` (a finite
number, rounded to 5 decimals) is the feedback value a display shows and the records keep. An empty dict (or
None) means no value yet; a bare number is taken as ``{"value": number}``.

A signal is named in the serve config (``feedback = "NAME"``) and found in the entry point group
``fmriface.feedback`` (a package declares ``[project.entry-points."fmriface.feedback"] NAME = "module:factory"``);
the built-in ones are found without their entry points too, and ``module:factory`` names a factory directly
(for a plugin under development, importable from ``sys.path``).

Isolation: a plugin's calls run on a thread of its own (:class:`GuardedSignal`) and the worker waits at most
``budget_s`` for each. A call that raises, overruns the budget or returns a value that is not a finite number
(NaN, infinity, a string) is logged as an error, the signal is disabled for the rest of the run (its thread,
perhaps still running, is abandoned) and every later message carries ``signal`` and ``disabled`` (the reason)
in place of a value. The live path never stops for a plugin, whatever ``FMRIFACE_RAISE`` says. A thread cannot
stop a plugin that holds the interpreter lock in a loop of pure Python: the budget then still fires, at the
interpreter's next switch (5 ms), but the worker shares the lock with it until it returns.
"""

from __future__ import annotations

import importlib
import logging
import math
import queue
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import numpy as np

__all__ = [
    "GROUP",
    "BUILTIN_SIGNALS",
    "FeedbackSignal",
    "FeedbackPluginError",
    "GuardedSignal",
    "available_signals",
    "check_signal_name",
    "load_factory",
    "make_signal",
]

log = logging.getLogger("service.live.feedback")

#: The entry point group of feedback signals.
GROUP = "fmriface.feedback"
#: The built-in signals (also declared as entry points in pyproject.toml): name -> ``module:factory``.
BUILTIN_SIGNALS = {
    "target-correlation": "service.live.feedback:TargetCorrelation",
    "attribute-projection": "service.live.feedback:AttributeProjection",
}


class FeedbackSignal(Protocol):
    """What a feedback signal offers (``set_target`` and ``clear_target`` are optional)."""

    def frame(self, latent: np.ndarray) -> Mapping[str, Any] | float | None:
        """Feedback of one volume's latent."""
        ...

    def trial(self, latent: np.ndarray) -> Mapping[str, Any] | float | None:
        """Feedback of one trial's latent."""
        ...


class FeedbackPluginError(ValueError):
    """A feedback signal that cannot be found or built; the message names it and the signals available."""

    user_error = True


def available_signals() -> dict[str, str]:
    """Every signal name that can be chosen: the built-in ones and the entry points of ``fmriface.feedback``."""
    from importlib.metadata import entry_points

    found = dict(BUILTIN_SIGNALS)
    for ep in entry_points(group=GROUP):
        found.setdefault(ep.name, ep.value)
    return found


def check_signal_name(name: str) -> None:
    """Refuse a signal name that is neither known nor of the form ``module:factory`` (nothing is imported)."""
    if name in BUILTIN_SIGNALS or _is_spec(name):
        return
    names = available_signals()
    if name not in names:
        raise FeedbackPluginError(
            f"feedback signal {name!r} is not installed (entry point group {GROUP!r}); "
            f"available: {', '.join(sorted(names))}"
        )


def _is_spec(name: str) -> bool:
    module, _, attr = name.partition(":")
    return bool(module and attr) and all(p.isidentifier() for p in (*module.split("."), *attr.split(".")))


def load_factory(name: str) -> Callable[..., Any]:
    """The factory of signal ``name``: a built-in, an entry point of ``fmriface.feedback``, or ``module:factory``."""
    check_signal_name(name)
    spec = BUILTIN_SIGNALS.get(name) or (name if _is_spec(name) else available_signals()[name])
    module, _, attr = spec.partition(":")
    try:
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise FeedbackPluginError(f"feedback signal {name!r} ({spec}) cannot be loaded: {exc}") from None
    if not callable(obj):
        raise FeedbackPluginError(f"feedback signal {name!r} ({spec}) is not callable")
    return obj


def make_signal(name: str, context: Any, options: dict[str, Any], budget_s: float) -> Any:
    """Build signal ``name`` with ``options``; a plugin (not built in) comes wrapped in a :class:`GuardedSignal`."""
    factory = load_factory(name)
    try:
        signal = factory(context, **options)
    except Exception as exc:  # noqa: BLE001 - a signal that cannot be built stops the start, naming it
        raise FeedbackPluginError(f"feedback signal {name!r} could not be built: {type(exc).__name__}: {exc}") from exc
    for method in ("frame", "trial"):
        if not callable(getattr(signal, method, None)):
            raise FeedbackPluginError(f"feedback signal {name!r} has no {method}(latent) method")
    return signal if name in BUILTIN_SIGNALS else GuardedSignal(name, signal, budget_s)


def checked(result: Any) -> dict[str, Any]:
    """A signal's result as the fields of ``feedback``; ValueError for one that is not usable (NaN, a string)."""
    if result is None:
        return {}
    if isinstance(result, (int, float, np.number)) and not isinstance(result, bool):
        result = {"value": result}
    if not isinstance(result, Mapping):
        raise ValueError(f"returned a {type(result).__name__}, not a dict or a number")
    out = {str(k): v for k, v in result.items() if k != "projections"}
    if "value" in out:
        v = out["value"]
        if isinstance(v, bool) or not isinstance(v, (int, float, np.number)) or not math.isfinite(float(v)):
            raise ValueError(f"returned value {v!r}, not a finite number")
        out["value"] = round(float(v), 5)
    from service.jsonsafe import dumps

    dumps(out)  # NaN, infinity or what JSON cannot hold anywhere in it: refused here, not on the wire
    return out


def _serve_calls(jobs: queue.SimpleQueue) -> None:
    """The plugin's thread: run each job and hand back its result or its exception."""
    while True:
        job = jobs.get()
        if job is None:
            return
        fn, args, box, done = job
        try:
            box.append((True, fn(*args)))
        except BaseException as exc:  # noqa: BLE001 - handed back to the worker, which reports it
            box.append((False, exc))
        done.set()


class GuardedSignal:
    """A plugin signal run in isolation: on a thread of its own, within ``budget_s`` per call.

    Parameters
    ----------
    name : str
    signal : FeedbackSignal
    budget_s : float
        The longest a call may take; a call that takes longer disables the signal.

    Attributes
    ----------
    disabled_ : str or None
        Why the signal was disabled for the run (None while it works).
    calls_ : int
    max_ms_ : float
        The slowest call so far that returned in time.
    """

    def __init__(self, name: str, signal: Any, budget_s: float) -> None:
        self.name, self.signal, self.budget_s = name, signal, float(budget_s)
        self.disabled_: str | None = None
        self.calls_ = 0
        self.max_ms_ = 0.0
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        thread = threading.Thread(target=_serve_calls, args=(self._jobs,), name=f"feedback-{name}", daemon=True)
        thread.start()
        weakref.finalize(self, self._jobs.put, None)  # the thread ends with this object

    def _call(self, method: str, *args: Any) -> Any:
        fn = getattr(self.signal, method, None)
        if self.disabled_ is not None or fn is None:
            return None
        box: list[tuple[bool, Any]] = []
        done = threading.Event()
        start = time.perf_counter()
        self._jobs.put((fn, args, box, done))
        if not done.wait(self.budget_s):
            raise _Failure(f"{method} overran its budget of {1000 * self.budget_s:g} ms")
        self.calls_ += 1
        self.max_ms_ = max(self.max_ms_, 1000 * (time.perf_counter() - start))
        ok, value = box[0]
        if not ok:
            raise _Failure(f"{method} raised {type(value).__name__}: {value}")
        return value

    def _result(self, method: str, latent: np.ndarray) -> dict[str, Any]:
        if self.disabled_ is not None:
            return {"signal": self.name, "disabled": self.disabled_}
        try:
            out = checked(self._call(method, np.array(latent, np.float32)))  # a copy: the plugin keeps its own
        except (_Failure, ValueError) as exc:
            self._disable(str(exc) if isinstance(exc, _Failure) else f"{method} {exc}")
            return {"signal": self.name, "disabled": self.disabled_}
        return {**out, "signal": self.name}

    def _disable(self, reason: str) -> None:
        self.disabled_ = reason
        log.error("feedback signal %r disabled for the run: %s (the run goes on without its value)", self.name, reason)

    def frame(self, latent: np.ndarray) -> dict[str, Any]:
        """The plugin's feedback of one volume (its fields and ``signal``; ``disabled`` once it failed)."""
        return self._result("frame", latent)

    def trial(self, latent: np.ndarray) -> dict[str, Any]:
        """The plugin's feedback of one trial."""
        return self._result("trial", latent)

    def set_target(self, latent: np.ndarray, source: Mapping[str, Any]) -> None:
        """Pass the new target on (within the budget; a failure disables the signal)."""
        self._notify("set_target", np.array(latent, np.float32), dict(source))

    def clear_target(self) -> None:
        """Pass the cleared target on."""
        self._notify("clear_target")

    def _notify(self, method: str, *args: Any) -> None:
        try:
            self._call(method, *args)
        except _Failure as exc:
            self._disable(str(exc))

    def report(self) -> dict[str, Any]:
        """The signal's name, calls, slowest call (ms) and why it was disabled (None if it was not)."""
        return {"name": self.name, "calls": self.calls_, "max_ms": round(self.max_ms_, 3), "disabled": self.disabled_}


class _Failure(Exception):
    """A plugin call that raised or overran (the reason is the message)."""
