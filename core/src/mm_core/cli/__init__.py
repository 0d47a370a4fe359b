"""The ``mmrun`` command line (see :mod:`mm_core.cli.main`)."""
