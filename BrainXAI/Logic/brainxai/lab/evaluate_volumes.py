"""Volume-level evaluation: the product's own pipeline on whole scans listed in a manifest.

The slice metrics (evaluate.py) measure the model on curated 2D slices; this runs what a user runs, `pipeline.analyse`
on each volume, and scores what a user sees: the volume's diagnosis, the segmented lesion against a reference mask,
where the heatmap peaks, the "lesion" and regions reported for a tumour-free head. Manifest: CSV with columns
path, label (one of CLASSES) and optionally mask (a tumour mask on, or resampled onto, the scan's grid) and contrast
(enhanced / plain: whether the scan is contrast-enhanced, for the input check's hit and false-alarm rates).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Callable

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from .. import CLASSES, layout
from ..errors import BrainXAIError
from ..reporting.report import LOW_CONFIDENCE

PEAK_TOLERANCE_VOXELS = 3.0  # a heatmap peak this close to the reference tumour counts as inside it
DEFAULT_METHOD = "gradcam++"
CONTRAST = ("enhanced", "plain")


def read_manifest(path: str | Path, data_root: str | Path | None = None) -> list[dict]:
    """Rows {id, path, label, mask}; relative paths are resolved against data_root (default: the manifest's folder)."""
    path = Path(path)
    if not path.is_file():
        raise BrainXAIError(f"no manifest at {path}: give a CSV with columns path,label[,mask]")
    root = Path(data_root) if data_root is not None else path.parent
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"path", "label"} <= set(reader.fieldnames):
            raise BrainXAIError(f"{path} needs the columns path,label (and optionally mask); it has "
                                f"{', '.join(reader.fieldnames or []) or 'none'}")
        rows = []
        for line, r in enumerate(reader, start=2):
            label = (r.get("label") or "").strip()
            if label not in CLASSES:
                raise BrainXAIError(f"{path}:{line}: label '{label}' is not one of {', '.join(CLASSES)}")
            scan = root / r["path"].strip()
            mask = root / r["mask"].strip() if (r.get("mask") or "").strip() else None
            for p in (scan, mask):
                if p is not None and not p.is_file():
                    raise BrainXAIError(f"{path}:{line}: {p} does not exist (relative paths are read from {root})")
            contrast = (r.get("contrast") or "").strip() or None
            if contrast not in (None, *CONTRAST):
                raise BrainXAIError(f"{path}:{line}: contrast '{contrast}' is not one of {', '.join(CONTRAST)} "
                                    "(or empty)")
            rows.append({"id": (r.get("id") or "").strip() or scan.name.split(".")[0], "path": scan, "label": label,
                         "mask": mask, "contrast": contrast})
    if not rows:
        raise BrainXAIError(f"{path} lists no volumes")
    return rows


def _array(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(image)  # a copy: never a view of an image that may be freed


def reference_mask(mask_path: Path, scan: sitk.Image) -> np.ndarray:
    """The reference tumour on the scan's voxel grid (nearest neighbour where the grids differ)."""
    mask = sitk.ReadImage(str(mask_path))
    same = (mask.GetSize() == scan.GetSize() and np.allclose(mask.GetSpacing(), scan.GetSpacing(), atol=1e-4)
            and np.allclose(mask.GetOrigin(), scan.GetOrigin(), atol=1e-3)
            and np.allclose(mask.GetDirection(), scan.GetDirection(), atol=1e-4))
    if not same:
        mask = sitk.Resample(mask, scan, sitk.Transform(), sitk.sitkNearestNeighbor, 0.0)
    return _array(mask) > 0.5


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else float(2 * np.logical_and(a, b).sum() / total)


def near(point, truth_distance: np.ndarray, tolerance: float = PEAK_TOLERANCE_VOXELS) -> bool:
    """Whether a (k, j, i) voxel lies within `tolerance` voxels of the reference tumour."""
    return bool(truth_distance[tuple(int(round(c)) for c in point)] <= tolerance)


def score_case(findings: dict, images: dict, label: str, truth: np.ndarray | None, method: str,
               voxel_ml: float) -> dict:
    """One volume's row from the pipeline's findings and images (on the scan's grid)."""
    d = findings["diagnosis"]
    indeterminate = max(d["probabilities"].values()) < LOW_CONFIDENCE  # what the report then says
    row = {
        "label": label,
        "diagnosis": d["label"],
        "correct": d["label"] == label,
        "indeterminate": indeterminate,
        "confidently_wrong": d["label"] != label and not indeterminate,
        "probabilities": d["probabilities"],
        "lesion_ml": findings["lesion"]["volume_ml"],
        "regions": [r["name"] for r in findings["regions"]],
        "registration_converged": bool((findings.get("registration") or {}).get("converged", False)),
        "warnings": len(findings["warnings"]),
        "input_flags": list((findings.get("input_check") or {}).get("flags", [])),
        "contrast_probability": (findings.get("input_check") or {}).get("contrast_probability"),
    }
    if truth is not None and truth.any():
        seg = _array(images[layout.SEGMENTATION]) > 0
        heat = _array(images[layout.heatmap(method)])
        cam = _array(images[layout.mask(method)]) > 0
        distance = ndi.distance_transform_edt(~truth)  # voxels to the nearest tumour voxel
        row["reference_ml"] = round(float(truth.sum() * voxel_ml), 2)
        row["lesion_dice"] = dice(seg, truth)
        row["cam_peak_in_tumour"] = bool(heat.max() > 0) and near(np.unravel_index(int(heat.argmax()), heat.shape),
                                                                   distance)
        row["cam_centroid_in_tumour"] = bool(cam.any()) and near(ndi.center_of_mass(cam), distance)
    if label == "no_tumor":
        row["false_lesion_ml"] = findings["lesion"]["volume_ml"]
    return row


def evaluate_case(model, case: dict, method: str = DEFAULT_METHOD, threshold_percentile: float = 90.0,
                  progress: Callable[[str, float], None] | None = None, derived: bool = False) -> dict:
    from .. import pipeline
    from ..load import read_input

    image, info = read_input(case["path"])
    truth = reference_mask(case["mask"], image) if case["mask"] is not None else None
    r = pipeline.analyse(image, info, pipeline.Options(methods=(method,), threshold_percentile=threshold_percentile),
                         model=model, progress=progress)
    voxel_ml = float(np.prod(image.GetSpacing())) / 1000.0
    row = {"id": case["id"], **score_case(r.findings, r.images, case["label"], truth, method, voxel_ml),
           "contrast": case.get("contrast")}
    if derived:
        row["derived_inputs"] = derived_input_flags(image)
    return row


def _rate(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if key in r]
    return float(np.mean(values)) if values else None


def summarise(rows: list[dict]) -> dict:
    """Per reference label: how often the volume was called that, and the lesion / heatmap measures."""
    out = {}
    for label in [c for c in CLASSES if any(r["label"] == c for r in rows)]:
        group = [r for r in rows if r["label"] == label]
        s = {"volumes": len(group), "called_correctly": _rate(group, "correct"),
             "indeterminate": _rate(group, "indeterminate"), "confidently_wrong": _rate(group, "confidently_wrong"),
             "calls": {c: sum(r["diagnosis"] == c for r in group) for c in CLASSES}}
        if label == "no_tumor":
            s["false_lesion_ml_median"] = float(np.median([r["false_lesion_ml"] for r in group]))
            s["false_lesion_ml_max"] = float(np.max([r["false_lesion_ml"] for r in group]))
            s["without_regions"] = float(np.mean([not r["regions"] for r in group]))
            regions: dict[str, int] = {}
            for r in group:
                for name in r["regions"]:
                    regions[name] = regions.get(name, 0) + 1
            s["regions_reported"] = dict(sorted(regions.items(), key=lambda kv: -kv[1]))
        else:
            for key in ("lesion_dice", "cam_peak_in_tumour", "cam_centroid_in_tumour"):
                s[key] = _rate(group, key)
            s["with_reference_mask"] = sum("lesion_dice" in r for r in group)
        out[label] = s
    return out


SLAB_MM = 30.0  # a derived input that misses most of the brain: this much of the scan around its middle


def derived_inputs(image: sitk.Image, seed: int = 0) -> dict[str, sitk.Image]:
    """Inputs the check must catch, made from a real scan: a slab of SLAB_MM across its longest physical axis
    (partial brain), and uniform and smooth (Gaussian, 4 voxels) noise on its grid (not a brain MRI)."""
    size, spacing = np.array(image.GetSize()), np.array(image.GetSpacing())
    axis = int(np.argmax(size * spacing))
    keep = max(8, int(round(SLAB_MM / spacing[axis])))
    start = int(max(0, (size[axis] - keep) // 2))
    index, extent = [0, 0, 0], [int(v) for v in size]
    index[axis], extent[axis] = start, min(keep, int(size[axis]))
    slab = sitk.RegionOfInterest(image, extent, index)
    noise = sitk.GetImageFromArray(np.random.default_rng(seed).random(size[::-1]).astype(np.float32))
    noise.CopyInformation(image)
    smooth = sitk.SmoothingRecursiveGaussian(noise, 4.0 * min(image.GetSpacing()))
    return {"slab": slab, "noise": noise, "smooth_noise": smooth}


def derived_input_flags(image: sitk.Image) -> dict[str, list[str] | str]:
    """The input check's flags on each derived input: the load stage's checks, the registration and its brain check
    as explain makes them (a refusal is a catch too), then the flags."""
    from .. import guard
    from ..mni import register
    from ..load import check_image

    out = {}
    for name, variant in derived_inputs(image).items():
        try:
            variant, _ = check_image(variant, name)
            reg = register.register_to_mni(variant)
            guard.refuse_if_not_brain(reg, name)
            out[name] = guard.check(reg, None)["flags"]
        except BrainXAIError as exc:
            out[name] = f"refused: {exc}"
    return out


def _rate_of(hits: list[bool]) -> float | None:
    return float(np.mean(hits)) if hits else None


def input_check_rates(rows: list[dict]) -> dict:
    """How often each input-check flag is raised, by the manifest's contrast column: on plain scans the
    not_contrast_enhanced flag is a hit, on enhanced ones a false alarm; the other flags are false alarms on any
    real brain scan."""
    out = {}
    derived = [r["derived_inputs"] for r in rows if "derived_inputs" in r]
    if derived:
        out["derived"] = {"volumes": len(derived),
                          "slab_flagged_partial_or_refused": float(np.mean(
                              [isinstance(d["slab"], str) or "partial_brain" in d["slab"] for d in derived])),
                          "noise_flagged_not_brain_or_refused": float(np.mean(
                              [isinstance(d["noise"], str) or "not_brain_mri" in d["noise"] for d in derived])),
                          "smooth_noise_refused": _rate_of([isinstance(d["smooth_noise"], str)
                                                            for d in derived if "smooth_noise" in d])}
    for contrast in (*CONTRAST, None):
        group = [r for r in rows if r.get("contrast") == contrast]
        if group:
            out[contrast or "unknown"] = {"volumes": len(group), **{
                flag: float(np.mean([flag in r.get("input_flags", []) for r in group]))
                for flag in ("not_contrast_enhanced", "not_brain_mri", "partial_brain")}}
    return out


def evaluate_volumes(model, manifest: str | Path, data_root: str | Path | None = None, method: str = DEFAULT_METHOD,
                     threshold_percentile: float = 90.0, progress: Callable[[str, int, int], None] | None = None,
                     derived: bool = False) -> dict:
    cases = read_manifest(manifest, data_root)
    rows = []
    for i, case in enumerate(cases):
        if progress:
            progress("volumes", i, len(cases))
        try:
            rows.append(evaluate_case(model, case, method, threshold_percentile, derived=derived))
        except BrainXAIError as exc:  # a volume the product refuses is a result too, not a crash of the run
            rows.append({"id": case["id"], "label": case["label"], "diagnosis": None, "correct": False,
                         "error": str(exc)})
    if progress:
        progress("volumes", len(cases), len(cases))
    scored = [r for r in rows if "error" not in r]
    return {
        "input_check": input_check_rates(scored),
        "settings": {"manifest": Path(manifest).name, "method": method, "threshold_percentile": threshold_percentile,
                     "peak_tolerance_voxels": PEAK_TOLERANCE_VOXELS, "model": model.info()},
        "summary": summarise(scored) if scored else {},
        "refused": [{"id": r["id"], "error": r["error"]} for r in rows if "error" in r],
        "volumes": rows,
    }


def _fmt(v, digits: int = 2) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def render_markdown(m: dict) -> str:
    s = m["settings"]
    lines = [f"# Volume evaluation ({s['method']}, mask percentile {s['threshold_percentile']:g})", "",
             f"Manifest `{Path(s['manifest']).name}`; model {s['model']['name']} {s['model']['version']} "
             f"(sha256 {s['model']['sha256'][:12]}). A heatmap peak or mask centroid counts as inside the tumour "
             f"within {s['peak_tolerance_voxels']:g} voxels.", "",
             f"Indeterminate: the top probability is under {LOW_CONFIDENCE:g}, and the report says the class is "
             "indeterminate; confidently wrong: a wrong class reported as favoured.", "",
             "| reference | volumes | called correctly | indeterminate | confidently wrong | calls | lesion Dice (mean) | "
             "CAM peak in tumour | CAM centroid in tumour | false lesion mL (median / max) | no region listed |",
             "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|"]
    for label, g in m["summary"].items():
        calls = ", ".join(f"{c} {n}" for c, n in g["calls"].items() if n)
        lines.append(f"| {label} | {g['volumes']} | {_fmt(g['called_correctly'])} | {_fmt(g['indeterminate'])} | "
                     f"{_fmt(g['confidently_wrong'])} | {calls} | "
                     f"{_fmt(g.get('lesion_dice'))} | {_fmt(g.get('cam_peak_in_tumour'))} | "
                     f"{_fmt(g.get('cam_centroid_in_tumour'))} | "
                     + (f"{_fmt(g['false_lesion_ml_median'], 1)} / {_fmt(g['false_lesion_ml_max'], 1)}"
                        if "false_lesion_ml_median" in g else "–")
                     + f" | {_fmt(g.get('without_regions'))} |")
    free = m["summary"].get("no_tumor", {}).get("regions_reported")
    if free:
        lines += ["", "Regions reported on tumour-free volumes (volumes naming each): "
                  + ", ".join(f"{k} ({v})" for k, v in list(free.items())[:12]) + "."]
    if m.get("input_check"):
        lines += ["", "Input check, share of volumes flagged (on plain scans `not_contrast_enhanced` is a hit, on "
                  "enhanced ones a false alarm; every flag is a false alarm on a real brain scan otherwise):", "",
                  "| scans | volumes | not contrast-enhanced | not a brain MRI | partial brain |",
                  "|---|---:|---:|---:|---:|"]
        for contrast, g in m["input_check"].items():
            if contrast == "derived":
                continue
            lines.append(f"| {contrast} | {g['volumes']} | {_fmt(g['not_contrast_enhanced'])} | "
                         f"{_fmt(g['not_brain_mri'])} | {_fmt(g['partial_brain'])} |")
    d = (m.get("input_check") or {}).get("derived")
    if d:
        lines += ["", f"Derived from each of the {d['volumes']} scans: a {SLAB_MM:g} mm slab across its longest axis "
                  f"flagged partial brain (or refused) {_fmt(d['slab_flagged_partial_or_refused'])}; noise on its grid "
                  f"flagged not a brain MRI (or refused) {_fmt(d['noise_flagged_not_brain_or_refused'])}; smooth noise "
                  f"refused {_fmt(d.get('smooth_noise_refused'))}."]
    lines += ["", "| volume | reference | diagnosis | p(reference) | lesion mL | Dice | peak in tumour | "
              "centroid in tumour | regions | input check |", "|---|---|---|---:|---:|---:|---|---|---:|---|"]
    for r in m["volumes"]:
        if "error" in r:
            lines.append(f"| {r['id']} | {r['label']} | refused: {r['error']} | | | | | | | |")
            continue
        lines.append(f"| {r['id']} | {r['label']} | {r['diagnosis']} | {_fmt(r['probabilities'][r['label']])} | "
                     f"{_fmt(r['lesion_ml'], 1)} | {_fmt(r.get('lesion_dice'))} | {_fmt(r.get('cam_peak_in_tumour'))} | "
                     f"{_fmt(r.get('cam_centroid_in_tumour'))} | {len(r['regions'])} | "
                     f"{', '.join(r.get('input_flags', [])) or 'passed'} |")
    return "\n".join(lines) + "\n"


def write_volume_metrics(m: dict, out: Path, overwrite: bool = False) -> list[Path]:
    out = Path(out)
    paths = [out, out.with_suffix(".md")]
    existing = [p for p in paths if p.exists()]
    if existing and not overwrite:
        raise BrainXAIError(f"{existing[0]} exists: choose another --out or pass --overwrite")
    out.parent.mkdir(parents=True, exist_ok=True)
    for p, text in zip(paths, (json.dumps(m, indent=2, default=str), render_markdown(m))):
        tmp = p.with_name(f".{p.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(p)
    return paths
