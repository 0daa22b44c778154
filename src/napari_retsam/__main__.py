"""``python -m napari_retsam`` runs the ``retsam`` command line."""

from napari_retsam.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
