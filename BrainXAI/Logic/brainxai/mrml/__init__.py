"""Slicer's scene (MRML): results as volume, label-map, segmentation and table nodes, and slice-view rendering.
Imports Slicer's `slicer` / `vtk` modules only inside functions (the real ones, or slicer-core outside Slicer)."""
