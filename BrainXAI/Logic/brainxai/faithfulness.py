"""Faithfulness stage: does the model need what a heatmap marks?

Counterfactual: the region a method's mask marks is removed from the slices it was explained on, filled in from
the tissue around it (normalised convolution: a Gaussian average of the unmasked pixels only, so no lesion
intensity leaks back in), and the classifier is asked again. The volume vote is recomputed with those slices'
new probabilities and the original vote weights, so the answer reads "without the highlighted region the model
predicts X (p)". A map that marks what the decision rests on moves the call; one that does not, leaves it.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

EDIT = "inpainted"  # how the region is removed, as findings.json says it
INPAINT_SIGMA_PX = 12.0  # at the model's 224 px (~1 cm on an adult head): far enough to reach a large mask's centre


def inpaint(slices: np.ndarray, masks: np.ndarray, sigma_px: float = INPAINT_SIGMA_PX) -> np.ndarray:
    """(N, S, S) slices with every pixel inside `masks` replaced by the Gaussian-weighted mean of the pixels outside
    it; where no outside pixel is near, by the mean of the slice outside the mask."""
    keep = (~masks).astype(np.float32)
    sigma = (0.0, sigma_px, sigma_px)
    weight = ndi.gaussian_filter(keep, sigma, truncate=4.0)
    fill = ndi.gaussian_filter(slices * keep, sigma, truncate=4.0)
    outside_mean = (slices * keep).sum((1, 2)) / np.maximum(keep.sum((1, 2)), 1.0)
    fill = np.where(weight > 1e-3, fill / np.maximum(weight, 1e-3), outside_mean[:, None, None])
    return np.where(masks, fill, slices).astype(np.float32)


def counterfactual(volume_probabilities: np.ndarray, classes, percentile: float) -> dict:
    """findings.json's entry for the volume call with the region (the mask at `percentile`) removed."""
    p = np.asarray(volume_probabilities, float)
    return {"edit": EDIT, "threshold_percentile": float(percentile), "label": classes[int(p.argmax())],
            "probabilities": {c: round(float(v), 4) for c, v in zip(classes, p)}}
