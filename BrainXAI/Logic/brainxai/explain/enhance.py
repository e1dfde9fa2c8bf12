"""Optional heatmap enhancement: percentile stretch, then CLAHE (scikit-image's equalize_adapthist), per slice.

A map whose values crowd into a narrow band (prototype similarities often do) shows little structure in a colour
scale; stretching between low and high percentiles of the head's values and equalising contrast locally spreads
them out. It changes what the percentile threshold cuts, so its effect on Dice, pointing and deletion / insertion is
measured (`brainxai evaluate --enhance`), not assumed.
"""

from __future__ import annotations

import numpy as np

LOW, HIGH = 2.0, 98.0  # percentiles of the in-region values mapped to 0 and 1
CLIP_LIMIT = 0.01  # scikit-image's default
TILES = 8  # CLAHE tiles per side (28 px at the model's 224)


def enhance(maps: np.ndarray, regions: np.ndarray | None = None) -> np.ndarray:
    """(N, S, S) heatmaps in [0, 1] -> the same, stretched and equalised; `regions` (N, S, S) bool: where the
    percentiles are taken (the head) and outside which the result is 0."""
    from skimage.exposure import equalize_adapthist

    out = np.zeros(maps.shape, np.float32)
    for i, m in enumerate(maps):
        region = regions[i] if regions is not None else np.ones(m.shape, bool)
        if not region.any():
            continue
        lo, hi = np.percentile(m[region], [LOW, HIGH])
        stretched = np.clip((m - lo) / max(hi - lo, 1e-6), 0, 1)
        equalised = equalize_adapthist(stretched, kernel_size=max(m.shape[-1] // TILES, 8), clip_limit=CLIP_LIMIT)
        out[i] = np.where(region, equalised, 0).astype(np.float32)
    return out
