"""One module per ``fmriface`` subcommand, each with ``main(argv=None) -> int`` (see :mod:`fmriface.cli`)."""
