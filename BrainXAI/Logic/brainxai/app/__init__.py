"""The Slicer module's logic without Qt: the panel controller, the session that runs the pipeline in a background
process and loads its results, that process, and the package installs Slicer needs."""
