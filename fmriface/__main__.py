"""`python -m fmriface`: the ``fmriface`` command (also how torchrun starts a training run on every rank)."""

from fmriface.cli import main

raise SystemExit(main())
