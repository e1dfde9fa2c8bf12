"""What several test modules share: realistic findings cases, random valid findings, and copies of an image that are
the same physical scan stored differently (flipped index axes, rotated direction cosines)."""

import copy
import random

import numpy as np
import SimpleITK as sitk

from brainxai import CLASSES
from brainxai.mni import atlas
from brainxai.mni.atlas import display_name

SHA = "3f2a9c1b7d4e20230115aa6c0de5b1f94e7d2c8a0b3e6f1d9c4a7b2e5f8d1c3a"  # embeds 20230115: must not read as a date


def glioma_case() -> dict:
    return {
        "schema_version": "1.0",
        "input": {"shape": [240, 240, 155], "spacing_mm": [1.0, 1.0, 1.0], "phantom": False, "kind": "volume",
                  "format": "NIfTI"},
        "model": {"name": "ResNet-18 U-Net dual-head", "version": "0.1.0", "sha256": SHA, "classes": list(CLASSES)},
        "diagnosis": {"label": "glioma",
                      "probabilities": {"glioma": 0.9312, "meningioma": 0.0391, "pituitary": 0.0207, "no_tumor": 0.009},
                      "slices_with_tumor_evidence": 41, "slices_total": 155},
        "lesion": {"volume_ml": 23.43, "centroid_mni": [31.6, -10.2, 17.8], "hemisphere": "right",
                   "peak_region": "Right Cerebral White Matter", "source": "segmentation head"},
        "regions": [
            {"name": "Right Cerebral White Matter", "percent_of_lesion": 58.24, "percent_of_region": 4.12,
             "hemisphere": "right"},
            {"name": "Insular Cortex", "percent_of_lesion": 21.7, "percent_of_region": 17.96, "hemisphere": "right"},
            {"name": "Right Putamen", "percent_of_lesion": 9.05, "percent_of_region": 22.4, "hemisphere": "right"},
        ],
        "atlas": {"name": "Harvard-Oxford cortical and subcortical (maxprob, thr25, 1 mm)",
                  "probability_threshold_percent": 25},
        "explanations": [
            {"method": "gradcam", "target_class": "glioma", "threshold_percentile": 95, "dice_vs_segmentation": 0.712,
             "mask_volume_ml": 19.84, "slices_explained": 41},
            {"method": "gradcam++", "target_class": "glioma", "threshold_percentile": 95,
             "dice_vs_segmentation": 0.655, "mask_volume_ml": 24.06, "slices_explained": 41},
            {"method": "scorecam", "target_class": "glioma", "threshold_percentile": 95,
             "dice_vs_segmentation": 0.583, "mask_volume_ml": 15.27, "slices_explained": 41},
        ],
        "registration": {"metric": "Mattes mutual information", "metric_value": -0.6183, "converged": True,
                         "template": "MNI152NLin2009cAsym", "iterations": 187,
                         "stop_condition": "Convergence checker passed at iteration 187 (0.000976562 < 0.001)."},
        "warnings": [],
        "software": {"name": "brainxai", "version": "0.1.0"},
    }


def no_tumor_case() -> dict:
    f = glioma_case()
    f["diagnosis"] = {"label": "no_tumor",
                      "probabilities": {"glioma": 0.012, "meningioma": 0.021, "pituitary": 0.008, "no_tumor": 0.959},
                      "slices_with_tumor_evidence": 0, "slices_total": 155}
    f["lesion"] = {"volume_ml": 0.0, "centroid_mni": None, "hemisphere": None, "peak_region": None,
                   "source": "segmentation head"}
    f["regions"] = []
    f["explanations"] = [{"method": "gradcam", "target_class": "no_tumor", "threshold_percentile": 95,
                          "dice_vs_segmentation": None, "mask_volume_ml": 12.3, "slices_explained": 155}]
    return f


def phantom_case() -> dict:
    f = glioma_case()
    f["input"]["phantom"] = True
    f["registration"]["converged"] = False
    f["registration"]["stop_condition"] = "Maximum number of iterations (200) exceeded."
    f["registration"]["iterations"] = 200
    f["warnings"] = ["Input is a synthetic phantom, not a patient scan.",
                     "Registration did not converge; atlas labels are approximate."]
    return f


def slice_case() -> dict:
    f = glioma_case()
    f["input"] = {"shape": [512, 512, 1], "spacing_mm": [0.47, 0.47, 6.0], "phantom": False, "kind": "slice",
                  "format": "PNG"}
    f["diagnosis"]["slices_with_tumor_evidence"], f["diagnosis"]["slices_total"] = 1, 1
    f["lesion"].update(centroid_mni=None, hemisphere=None, peak_region=None)
    f["regions"], f["registration"] = [], None
    return f


def counterfactual_case() -> dict:
    """Schema 1.2: removing Grad-CAM's region changes the call, Grad-CAM++'s does not; Score-CAM's mask was
    re-thresholded after its counterfactual (at 90) was computed."""
    f = glioma_case()
    f["schema_version"] = "1.2"
    cases = [(95, "no_tumor", {"glioma": 0.2214, "meningioma": 0.0523, "pituitary": 0.0151, "no_tumor": 0.7112}),
             (95, "glioma", {"glioma": 0.6031, "meningioma": 0.1422, "pituitary": 0.0419, "no_tumor": 0.2128}),
             (90, "glioma", {"glioma": 0.8875, "meningioma": 0.0624, "pituitary": 0.0211, "no_tumor": 0.029})]
    scores = [(0.081, 0.573), (0.257, 0.751), (0.512, 0.601)]  # Score-CAM's: no better than random on deletion
    for e, (pct, label, probs), (d, i) in zip(f["explanations"], cases, scores):
        e["counterfactual"] = {"edit": "inpainted", "threshold_percentile": pct, "label": label, "probabilities": probs}
        e["faithfulness"] = {"slices": 6, "deletion_auc": d, "insertion_auc": i, "random_deletion_auc": 0.469,
                             "random_insertion_auc": 0.657}
    return f


def minimal_evidence_case() -> dict:
    """Schema 1.3: counterfactual_case plus a minimal-evidence mask (its own level; from its region alone the model
    keeps glioma) and an enhanced prototype map whose region alone does not suffice."""
    import copy

    f = counterfactual_case()
    f["schema_version"] = "1.3"
    base = copy.deepcopy(f["explanations"][1])
    mincam = {**copy.deepcopy(base), "method": "mincam", "threshold_level": 0.5, "mask_volume_ml": 6.8,
              "dice_vs_segmentation": 0.41,
              "minimal_evidence": {"level": 0.5, "area_percent_of_brain": 3.4, "label": "glioma",
                                   "probabilities": {"glioma": 0.8612, "meningioma": 0.0714, "pituitary": 0.0203,
                                                     "no_tumor": 0.0471}}}
    proto = {**copy.deepcopy(base), "method": "proto-late", "enhanced": True}
    f["explanations"] += [mincam, proto]
    return f


ALL_CASES = [glioma_case, no_tumor_case, phantom_case, slice_case, counterfactual_case, minimal_evidence_case]


def _region_names() -> list[str]:
    return [display_name(r["Name"]) for r in atlas.terminology_rows().values()]


def random_findings(rng: random.Random) -> dict:
    """A valid glioma-like findings dict with a random class, probabilities, side, regions and figures."""
    f = copy.deepcopy(glioma_case())
    label = rng.choice(CLASSES[:3])
    p = [rng.random() for _ in CLASSES]
    p[CLASSES.index(label)] += 2
    probs = {c: round(v / sum(p), 4) for c, v in zip(CLASSES, p)}
    probs[label] = round(1 - sum(v for c, v in probs.items() if c != label), 4)
    f["diagnosis"].update(label=label, probabilities=probs)
    side = rng.choice(["left", "right", "bilateral"])
    names = rng.sample(_region_names(), rng.randint(1, 5))
    f["regions"] = [{"name": n, "percent_of_lesion": round(rng.uniform(0.1, 90), 2),
                     "percent_of_region": round(rng.uniform(0.1, 60), 2),
                     "hemisphere": "left" if n.startswith("Left") else "right" if n.startswith("Right") else None}
                    for n in names]
    f["lesion"].update(volume_ml=round(rng.uniform(0.2, 120), 2), hemisphere=side, peak_region=names[0],
                       centroid_mni=[round(rng.uniform(-70, 70), 1) for _ in range(3)])
    f["schema_version"] = "1.3"
    for e in f["explanations"]:
        e.update(target_class=label, mask_volume_ml=round(rng.uniform(0.5, 80), 2),
                 dice_vs_segmentation=round(rng.uniform(0, 1), 3), threshold_percentile=rng.choice([85, 90, 95]))
        q = [rng.random() for _ in CLASSES]
        if rng.random() < 0.8:
            e["counterfactual"] = {"edit": "inpainted", "threshold_percentile": rng.choice([85, 90, 95]),
                                   "label": CLASSES[int(np.argmax(q))],
                                   "probabilities": {c: round(v / sum(q), 4) for c, v in zip(CLASSES, q)}}
        if rng.random() < 0.3:
            r = [rng.random() for _ in CLASSES]
            e.update(threshold_level=0.5, minimal_evidence={
                "level": 0.5, "area_percent_of_brain": round(rng.uniform(0.5, 15), 2),
                "label": CLASSES[int(np.argmax(r))], "probabilities": {c: round(v / sum(r), 4) for c, v in zip(CLASSES, r)}})
        if rng.random() < 0.8:
            e["faithfulness"] = {"slices": rng.randint(1, 6), **{k: round(rng.random(), 4) for k in (
                "deletion_auc", "insertion_auc", "random_deletion_auc", "random_insertion_auc")}}
    return f


def flipped_copy(img: sitk.Image, axis: int = 0) -> sitk.Image:
    """The same physical image stored with one index axis reversed."""
    arr = np.flip(sitk.GetArrayFromImage(img), axis=2 - axis)
    out = sitk.GetImageFromArray(np.ascontiguousarray(arr))
    d = np.array(img.GetDirection()).reshape(3, 3)
    far = [0, 0, 0]
    far[axis] = img.GetSize()[axis] - 1
    out.SetOrigin(img.TransformIndexToPhysicalPoint(far))
    d[:, axis] *= -1
    out.SetDirection(d.ravel().tolist())
    out.SetSpacing(img.GetSpacing())
    return out


def oblique_copy(img: sitk.Image, degrees: float = 15.0) -> sitk.Image:
    """The same voxels with direction cosines rotated about the image centre: a physically rotated head."""
    out = sitk.Image(img)
    centre = np.array(img.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in img.GetSize()]))
    a = np.deg2rad(degrees)
    rot = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]]) @ np.array(
        [[np.cos(a / 2), 0, np.sin(a / 2)], [0, 1, 0], [-np.sin(a / 2), 0, np.cos(a / 2)]])
    d = rot @ np.array(img.GetDirection()).reshape(3, 3)
    out.SetDirection(d.ravel().tolist())
    out.SetOrigin((centre + rot @ (np.array(img.GetOrigin()) - centre)).tolist())
    return out
