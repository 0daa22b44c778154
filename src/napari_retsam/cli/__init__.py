"""The ``retsam`` command line (see :mod:`napari_retsam.cli.main`)."""
