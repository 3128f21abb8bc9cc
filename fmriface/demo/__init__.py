"""``fmriface demo``: the whole loop on the embedded digital twin.

``steps`` runs the steps (twin, face space, fit, live run, reports) and reuses those whose inputs are unchanged;
``live`` is the live part (the service, the scanner emulator replaying the held-out run, the display). The
command's options are in :mod:`fmriface.commands.demo`; the report it writes is :mod:`offline.reports.demo`.
"""
