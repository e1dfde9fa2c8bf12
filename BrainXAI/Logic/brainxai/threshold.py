"""Threshold stage: heatmap -> binary mask by an adaptive percentile, cleaned to its significant components."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from .options import DEFAULT_PERCENTILE

MIN_COMPONENT_FRACTION = 0.1  # of the largest component: drops speckle, keeps a genuinely multifocal map
MIN_COMPONENT_ML = 0.05


def percentile_threshold(heat: np.ndarray, region: np.ndarray, percentile: float = DEFAULT_PERCENTILE) -> float:
    """The value below which `percentile` % of the heatmap's in-region voxels fall."""
    if not 0 < percentile < 100:
        raise ValueError(f"threshold percentile must be in (0, 100), got {percentile}")
    values = heat[region]
    return float(np.percentile(values, percentile)) if values.size else float("inf")


def significant_components(mask: np.ndarray, spacing_mm: tuple[float, float, float]) -> np.ndarray:
    """Keep connected components (26-connectivity) at least MIN_COMPONENT_FRACTION of the largest and
    MIN_COMPONENT_ML in volume. mask is a (z, y, x) array; spacing is (x, y, z) as SimpleITK gives it."""
    if not mask.any():
        return mask.astype(bool)
    img = sitk.GetImageFromArray(mask.astype(np.uint8))
    img.SetSpacing(tuple(float(s) for s in spacing_mm))
    labels = sitk.RelabelComponent(sitk.ConnectedComponent(img, True), sortByObjectSize=True)
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(labels)
    sizes = {lab: stats.GetPhysicalSize(lab) / 1000.0 for lab in stats.GetLabels()}  # mm^3 -> mL
    largest = max(sizes.values())
    keep = [lab for lab, ml in sizes.items() if ml >= max(MIN_COMPONENT_FRACTION * largest, MIN_COMPONENT_ML)]
    if not keep:  # a single tiny component: keep it rather than report an empty explanation
        keep = [1]
    return np.isin(sitk.GetArrayViewFromImage(labels), keep)


def confirmed_components(mask: np.ndarray, confirmed_slices: np.ndarray) -> np.ndarray:
    """Keep the connected components (26-connectivity) of a (z, y, x) mask that reach at least one slice whose
    flag in `confirmed_slices` (length z) is set: a segmented blob that no slice's classifier calls a tumour is
    one head disagreeing with the other, and on skull-base anatomy that is how false lesions arise."""
    if not mask.any():
        return mask.astype(bool)
    labels = sitk.GetArrayFromImage(sitk.ConnectedComponent(sitk.GetImageFromArray(mask.astype(np.uint8)), True))
    hits = np.unique(labels[np.asarray(confirmed_slices, bool)])
    return np.isin(labels, hits[hits > 0])


def threshold_heatmap(heat: np.ndarray, region: np.ndarray, spacing_mm, percentile: float = DEFAULT_PERCENTILE):
    """Returns (mask, threshold value). Voxels outside `region` are never in the mask."""
    thr = percentile_threshold(heat, region, percentile)
    raw = (heat > thr) & region
    return significant_components(raw, spacing_mm), thr


def level_mask(heat: np.ndarray, region: np.ndarray, spacing_mm, level: float) -> np.ndarray:
    """The mask of a heatmap whose values mean something on their own (a mask probability): at or above `level`."""
    return significant_components((heat >= level) & region, spacing_mm)


def dice(a: np.ndarray, b: np.ndarray) -> float | None:
    """Dice overlap; None when both masks are empty (agreement is undefined, not perfect)."""
    total = int(a.sum()) + int(b.sum())
    return None if total == 0 else float(2 * np.logical_and(a, b).sum() / total)


def mask_stats(mask: np.ndarray, segmentation: np.ndarray, voxel_ml: float) -> dict:
    """An explanation mask's entry in the findings: its agreement with the segmentation and its volume."""
    d = dice(mask, segmentation)
    return {"dice_vs_segmentation": None if d is None else round(d, 4),
            "mask_volume_ml": round(float(mask.sum() * voxel_ml), 3)}
