"""Real-time quality assurance of each volume (issue 27): the thresholds (:class:`QAConfig`), the causal per-volume
tracker the live service and the offline path share (:class:`QualityTracker`: metrics, censoring, the refusal of
an empty or constant volume; docs/qa.md) and the QA maps the operator sees (:func:`render_maps`). Names are
imported on first use (``lazy_loader``).
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "config": ["QAConfig"],
        "maps": ["render_maps"],
        "tracker": ["QualityTracker", "RefusedVolumeError", "check_volume", "median5", "REASONS", "QA_FIELDS"],
    },
)
