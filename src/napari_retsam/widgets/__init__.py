"""napari dock widgets: thin layers over the pure core (Qt and napari live here only)."""
