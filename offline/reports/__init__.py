"""HTML reports: the fit's evaluation report and the demo's report."""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "demo": ["write_demo_report", "offline_trial_latents"],
        "fit_report": ["write_report"],
    },
)
