"""Faithfulness stage: does the model need what a heatmap marks?

Deletion / insertion (Petsiuk et al. 2018, RISE), with pytorch-grad-cam's perturbation metrics: the class
probability as the map's most relevant pixels are removed first (deletion; lower area under the curve is better) or
restored first into a blurred slice (insertion; higher is better), against smooth random maps, the chance baseline
every method must beat. `brainxai evaluate` runs them on a labelled folder; each analysis on a few of its own
explained slices.

Counterfactual: the region a method's mask marks is removed from the slices it was explained on, filled in from
the tissue around it (normalised convolution: a Gaussian average of the unmasked pixels only, so no lesion
intensity leaks back in), and the classifier is asked again. The volume vote is recomputed with those slices'
new probabilities and the original vote weights, so the answer reads "without the highlighted region the model
predicts X (p)". A map that marks what the decision rests on moves the call; one that does not, leaves it.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from .progress import Cancel, check

PERTURBATION_FRACTIONS = np.linspace(0.0, 1.0, 11)  # evaluate's curves
CASE_FRACTIONS = np.linspace(0.0, 1.0, 5)  # per analysis: 3 perturbed passes each way per slice
CASE_SLICES = 4  # per analysis: the explained slices with the most lesion (the most confident without one)
RANDOM_SEED = 0
RANDOM = " random"  # the baseline's key beside the method names (a space: no method id has one)
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


def keep_only(slices: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """(N, S, S) slices with everything outside `masks` blurred away (the insertion curve's imputer): what the model
    sees when only the marked evidence is kept."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(slices[:, None], np.float32))
    keep = torch.from_numpy(np.ascontiguousarray(masks[:, None], np.float32))
    return blur_imputer(x, keep)[:, 0].numpy()


def counterfactual(volume_probabilities: np.ndarray, classes, percentile: float) -> dict:
    """findings.json's entry for the volume call with the region (the mask at `percentile`) removed."""
    p = np.asarray(volume_probabilities, float)
    return {"edit": EDIT, "threshold_percentile": float(percentile), "label": classes[int(p.argmax())],
            "probabilities": {c: round(float(v), 4) for c, v in zip(classes, p)}}


def random_maps(n: int, size: int, seed: int) -> np.ndarray:
    """Smooth random maps (coarse noise upsampled like a CAM from a 6x6 feature map): the chance baseline."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand((n, 1, max(size // 32, 2), max(size // 32, 2)), generator=g)
    return F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)[:, 0].numpy()


def _zero_imputer(x, keep):
    return x * keep


def blur_imputer(x, keep):
    """x inside `keep`, blurred outside (torch, differentiable in `keep`): the insertion curve's imputer, keep_only's
    edit and the minimal-evidence objective's."""
    from torchvision.transforms.functional import gaussian_blur

    return x * keep + gaussian_blur(x, [21, 21], [7.0, 7.0]) * (1 - keep)


def deletion_insertion(model, x: np.ndarray, maps: np.ndarray, targets: np.ndarray,
                       fractions: np.ndarray = PERTURBATION_FRACTIONS, precision: str = "fp32",
                       cancel: Cancel | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-slice deletion AUC (most relevant pixels removed first; lower is better) and insertion AUC (most
    relevant pixels restored first into a blurred slice; higher is better), of the target-class probability.
    x, maps: (N, S, S); targets: (N,) class indices; model: a LoadedModel."""
    return deletion_insertion_of({"map": maps}, model, x, targets, fractions, precision, cancel)["map"]


def deletion_insertion_of(maps: dict[str, np.ndarray], model, x: np.ndarray, targets: np.ndarray,
                          fractions: np.ndarray = PERTURBATION_FRACTIONS, precision: str = "fp32",
                          cancel: Cancel | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """deletion_insertion for several maps of the same slices: the curves' end points (the slice as it is, blurred,
    and blank) are the same for every map, so they are computed once."""
    import torch
    from pytorch_grad_cam.metrics.perturbation_confidence import (
        PerturbationConfidenceMetric, RemoveLeastRelevantFirst, RemoveMostRelevantFirst)
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    from .model import precision_mode

    xt = torch.from_numpy(np.ascontiguousarray(x[:, None], np.float32))
    rows, cols = torch.arange(len(xt)), torch.from_numpy(np.asarray(targets))
    tgts = [ClassifierOutputSoftmaxTarget(int(t)) for t in targets]
    out = {}
    with torch.no_grad(), precision_mode(model, precision) as (net, prepare):
        view = model.classifier(net)  # logits / temperature: the softmax is the calibrated probability

        def clf(t):
            return view(prepare(t)).float()

        p = torch.softmax(clf(xt), 1)[rows, cols].numpy()
        p_blur = torch.softmax(clf(blur_imputer(xt, torch.zeros_like(xt))), 1)[rows, cols].numpy()
        p_zero = torch.softmax(clf(torch.zeros_like(xt)), 1)[rows, cols].numpy()
        for name, m in maps.items():
            deletion, insertion = [p], [p_blur]
            for f in fractions[1:-1]:
                check(cancel)
                # RemoveMostRelevantFirst keeps pixels below the percentile; RemoveLeastRelevantFirst the top ones.
                delete = PerturbationConfidenceMetric(RemoveMostRelevantFirst(100 * (1 - f), _zero_imputer))
                insert = PerturbationConfidenceMetric(RemoveLeastRelevantFirst(100 * f, blur_imputer))
                deletion.append(delete(xt, m, tgts, clf, return_diff=False))
                insertion.append(insert(xt, m, tgts, clf, return_diff=False))
            out[name] = (_auc(deletion + [p_zero], fractions), _auc(insertion + [p], fractions))
    return out


def _auc(curve: list[np.ndarray], fractions: np.ndarray) -> np.ndarray:
    trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 has only trapz
    return trapezoid(np.stack(curve, 1), fractions, axis=1)


def case_scores(model, slices: np.ndarray, maps: dict[str, np.ndarray], target: int, precision: str = "fp32",
                cancel: Cancel | None = None) -> dict[str, dict]:
    """findings.json's faithfulness entry per method: mean deletion and insertion AUC over `slices` (N, S, S) for
    each method's maps (N, S, S), beside the same for smooth random maps on the same slices."""
    baseline = random_maps(len(slices), slices.shape[-1], RANDOM_SEED)
    curves = deletion_insertion_of({**maps, RANDOM: baseline}, model, slices, np.full(len(slices), target),
                                   CASE_FRACTIONS, precision, cancel)
    rd, ri = curves.pop(RANDOM)
    return {name: {"slices": int(len(slices)), "deletion_auc": round(float(d.mean()), 4),
                   "insertion_auc": round(float(i.mean()), 4), "random_deletion_auc": round(float(rd.mean()), 4),
                   "random_insertion_auc": round(float(ri.mean()), 4)} for name, (d, i) in curves.items()}
