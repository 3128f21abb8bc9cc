"""Real-time quality assurance of each volume (issue 27): the QA maps the operator sees
(:func:`render_maps`). Names are imported on first use (``lazy_loader``).
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "maps": ["render_maps"],
    },
)
