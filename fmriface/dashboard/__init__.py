"""The operator's dashboard: a separate process that subscribes to the service's stream and serves a live page.

``fmriface dashboard`` reads the service's published messages over the wire protocol (:mod:`service.protocol`,
CurveZMQ keys supported), keeps what the page shows in bounded state (:mod:`fmriface.dashboard.state`) and
pushes every change to the browsers over Server-Sent Events (:mod:`fmriface.dashboard.server`, aiohttp). The
page (``static/``: plain HTML, CSS and canvas plots, no CDN) shows the run's counts, motion and FD, latency per
stage, the decoded faces beside their stimuli, the neurofeedback value, intake problems, the run's summary and
the session's earlier runs (read from the run records, :mod:`fmriface.dashboard.runs`).

The service never imports this package (an import-linter contract): a slow or closed browser can only fall
behind in its own queue, never delay a volume.
"""

from __future__ import annotations
