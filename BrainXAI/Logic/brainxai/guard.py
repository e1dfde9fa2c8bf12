"""Input check: does the scan look like what the model was trained for — a contrast-enhanced T1 MRI of a brain,
with the whole brain in the field of view? Each failed check is a flag in findings["input_check"] and a sentence
in the findings' warnings, so the report, the LLM and the Slicer panel all say it.

- not a brain MRI: the registration to the MNI152 brain finds almost no shared information;
- partial brain: the registered template brain mostly falls outside the field of view;
- not contrast-enhanced: a logistic read-out of the features the model already computes (the ones its class head
  pools), fitted on the same slices of the same patients before and after gadolinium (TCGA-LGG training
  patients) with plain heads and contrast-enhanced slices of other sources (`fit_contrast_check`). It is tied to
  the weights it was fitted on: with other weights the contrast is not checked, and the findings say so.
Hit and false-alarm rates on held-out patients and scans: docs/metrics/input_guard.md."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from .mni.register import MIN_COVERAGE, Registration

# Real brain MRIs reach a mutual information with the MNI template of 0.04 (healthy heads, thick-slice PGBM)
# to 0.45 here; noise and other anatomy stay near 0.005.
MIN_BRAIN_MI = 0.02
CONTRAST_CHECK = "contrast_check.json"  # beside the weights it was fitted on
MIN_CONTRAST_PROBABILITY = 0.5
# Refused before any model runs (load stage): arrays that are not an MRI at all.
MAX_LABEL_VALUES = 32  # a slice with visible anatomy has more grey levels, even in 8 bits; a label map a handful
# CT stores air at about -1000 HU (a padding value such as -32768 outside an MRI's field of view is not air)
CT_AIR_HU, CT_AIR_FRACTION, CT_MIN_MAX = (-1100.0, -900.0), 0.05, 300.0
# An MRI of a head has background (air, zeros, a flat fill) at some edge of its field of view: a face of the array
# (an edge of a 2-D slice) that is dark (median in the lowest fifth of the 1st-99th percentile range) or flat (its
# 10th-90th percentile spread under a tenth of that range), give or take one grey level for integer data. Noise and
# textures have none. Measured on every shared volume and slice: docs/metrics/bad_inputs.md.
DARK_LEVEL, FLAT_SPREAD = 0.2, 0.1
_SAMPLE = 2_000_000


def not_an_mri(arr: np.ndarray) -> str | None:
    """Why the voxel values cannot be an MRI (a label map / segmentation, a CT in Hounsfield units, noise), else
    None. arr: (z, y, x), a 2-D slice as one z plane."""
    flat = np.asarray(arr).ravel()
    sample = flat[:: max(1, flat.size // _SAMPLE)]
    values = np.unique(sample)
    if len(values) <= MAX_LABEL_VALUES and np.all(values == np.round(values)):
        shown = ", ".join(f"{v:g}" for v in values[:6]) + (", ..." if len(values) > 6 else "")
        return (f"holds only {len(values)} distinct integer values ({shown}): a label map or segmentation, or an "
                "image without usable contrast, not an MRI to diagnose")
    air = float(np.mean((sample >= CT_AIR_HU[0]) & (sample <= CT_AIR_HU[1])))
    if air >= CT_AIR_FRACTION and float(sample.max()) >= CT_MIN_MAX:
        return (f"has {air:.0%} of its voxels at {CT_AIR_HU[0]:g} to {CT_AIR_HU[1]:g} (air in Hounsfield units) and "
                f"values up to {float(sample.max()):g}: it looks like a CT, not an MRI")
    if background_faces(np.asarray(arr), sample) == 0:
        return ("has no background at any edge of its field of view (an MRI of a head has air or zeros around it): "
                "it looks like noise or a texture, not an MRI")
    return None


def background_faces(arr: np.ndarray, sample: np.ndarray) -> int:
    """How many of the 6 faces of a (z, y, x) array are dark or flat background (see DARK_LEVEL)."""
    lo, hi = (float(v) for v in np.percentile(sample, [1, 99]))
    grain = 1.0 if np.all(sample == np.round(sample)) else 0.0  # one grey level of integer data
    count = 0
    for face in (arr[0], arr[-1], arr[:, 0], arr[:, -1], arr[:, :, 0], arr[:, :, -1]):
        p10, p50, p90 = np.percentile(face, [10, 50, 90])
        count += bool(p50 <= lo + max(DARK_LEVEL * (hi - lo), grain) or p90 - p10 <= max(FLAT_SPREAD * (hi - lo), grain))
    return count


def refuse_if_not_brain(reg: Registration, name: str = "the input") -> None:
    """No diagnosis for what is not a brain MRI: refused after the registration, before the model runs."""
    from .errors import BrainXAIError

    mi = -float(reg.metric_value)
    if not (np.isfinite(mi) and mi >= MIN_BRAIN_MI):
        raise BrainXAIError(f"{name} does not look like a brain MRI (mutual information with the MNI152 brain "
                            f"template {mi:.3f}, real brain scans reach {MIN_BRAIN_MI:g} or more): no diagnosis is "
                            "given; check that it is a head MRI with the brain in the field of view")



def descriptors(features: np.ndarray) -> np.ndarray:
    """(N, F, h, w) class-head input features -> (N, F): their average over the slice, as the head pools them."""
    return np.asarray(features, np.float32).mean((2, 3))


@lru_cache(maxsize=4)
def _read_check(path: str) -> dict | None:
    p = Path(path)
    return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else None


def contrast_check_path(weights: Path) -> Path:
    return Path(weights).with_name(CONTRAST_CHECK)


def contrast_probability(features: np.ndarray, weights: Path, weights_sha256: str) -> float | None:
    """P(contrast-enhanced) of a scan: the mean over its brain slices of the fitted read-out; None when no check
    was fitted on these weights."""
    check = _read_check(str(contrast_check_path(weights)))
    if check is None or check["weights_sha256"] != weights_sha256 or len(features) == 0:
        return None
    x = (descriptors(features) - np.asarray(check["mean"])) / np.asarray(check["scale"])
    z = x @ np.asarray(check["coef"]) + check["intercept"]
    return float(np.mean(1.0 / (1.0 + np.exp(-z))))


def unchecked() -> dict:
    """A single 2-D slice is not registered: nothing to check it against."""
    return {"checked": False, "brain_mri": None, "brain_coverage": None, "contrast_enhanced": None,
            "contrast_probability": None, "flags": []}


def check(reg: Registration, contrast_p: float | None) -> dict:
    """The input check of a registered volume, from its registration and contrast_probability."""
    mi = -float(reg.metric_value)
    brain_mri = bool(np.isfinite(mi) and mi >= MIN_BRAIN_MI)
    coverage = reg.brain_coverage
    enhanced = None if contrast_p is None or not brain_mri else bool(contrast_p >= MIN_CONTRAST_PROBABILITY)
    flags = []
    if not brain_mri:
        flags.append("not_brain_mri")
    elif coverage is not None and coverage < MIN_COVERAGE:
        flags.append("partial_brain")
    if enhanced is False:
        flags.append("not_contrast_enhanced")
    return {"checked": True, "brain_mri": brain_mri,
            "brain_coverage": None if coverage is None else round(float(coverage), 4),
            "contrast_enhanced": enhanced,
            "contrast_probability": None if contrast_p is None else round(float(contrast_p), 4), "flags": flags}


def warnings(result: dict, mutual_information: float | None = None) -> list[str]:
    """The sentences the findings carry for what the check found."""
    out = []
    if "not_brain_mri" in result["flags"]:
        mi = "" if mutual_information is None else f" (mutual information {mutual_information:.3f})"
        out.append(f"Input check: the input does not match the MNI152 brain template{mi}; it may not be a brain "
                   "MRI, and the diagnosis, heatmaps and regions below are not meaningful.")
    if "partial_brain" in result["flags"]:
        out.append(f"Input check: the field of view holds only {result['brain_coverage']:.0%} of the brain; parts "
                   "outside it were not analysed, and a tumour there would be missed.")
    if "not_contrast_enhanced" in result["flags"]:
        out.append(f"Input check: the scan does not look contrast-enhanced (probability "
                   f"{result['contrast_probability']:.2f}); the model expects a post-gadolinium T1, and on other "
                   "sequences its diagnosis is unreliable.")
    if result["checked"] and result["brain_mri"] and result["contrast_probability"] is None:
        out.append("Input check: the scan's contrast was not checked (no check fitted on these model weights).")
    return out
