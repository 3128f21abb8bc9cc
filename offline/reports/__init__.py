"""HTML reports: the fit's evaluation report and the demo's report."""

from offline.reports.demo import offline_trial_latents, write_demo_report
from offline.reports.fit_report import write_report

__all__ = ["write_demo_report", "offline_trial_latents", "write_report"]
