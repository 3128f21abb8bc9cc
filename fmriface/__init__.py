"""fmriface: live reconstruction of seen and imagined faces from fMRI.

This package is the front door only: the ``fmriface`` command (:mod:`fmriface.cli`), which dispatches to the
packages ``models``, ``offline``, ``service`` and ``stimulus`` with lazy imports, and the shared configuration
loading (:mod:`fmriface.config`).
"""

__version__ = "0.1.0"
