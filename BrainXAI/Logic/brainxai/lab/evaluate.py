"""Evaluate stage: slice-level diagnosis, segmentation and explanation quality on a labelled folder.

Metrics are computed at the model's resolution on the same preprocessing as training and inference. CAMs are
evaluated for the slice's true class (where the model should look), thresholded exactly like the pipeline does
(percentile of in-head values, significant components). Deletion / insertion (Petsiuk et al. 2018, RISE) use
pytorch-grad-cam's perturbation metrics; a smooth random map is the baseline every method must beat.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from scipy import ndimage as ndi

from .. import CLASSES
from .. import threshold as threshold_mod
from .datasets import figshare_samples, no_tumor_samples, split as train_val_split, tensorise
from ..errors import BrainXAIError
from ..faithfulness import PERTURBATION_FRACTIONS, deletion_insertion, inpaint, keep_only, random_maps
from ..explain import METHODS, get_method
from ..model import LoadedModel, predict_classes, predict_slices

ECE_BINS = 15
RANDOM_BASELINE = "random"


@dataclass
class EvalOptions:
    methods: tuple[str, ...] = METHODS  # every method: the comparison table
    enhance: bool = False  # percentile stretch + CLAHE on the percentile-cut maps (explain.enhance)
    split: str = "all"  # "all" slices of the folder(s), or "val": only our validation blocks (see data.block_split)
    threshold_percentile: float = threshold_mod.DEFAULT_PERCENTILE
    pointing_tolerance_px: float = 15.0  # in original-image pixels, as in Zhang et al.'s pointing game
    max_cam_slices: int | None = None  # per method; None = every tumour slice
    scorecam_slices: int = 24  # Score-CAM costs one forward pass per channel: subsampled by default
    perturbation_slices: int = 200  # deletion/insertion: 2 x 9 forward passes per slice and map
    style_slices: int | None = 500  # shortcut check: 5 intensity styles on a random subset of tumour slices
    seed: int = 0
    batch_size: int = 32


# ---------------------------------------------------------------- classification and calibration


def reliability(probs: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> dict:
    """Confidence-vs-accuracy per equal-width confidence bin, and the expected calibration error."""
    conf, correct = probs.max(1), probs.argmax(1) == y
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        sel = which == b
        if sel.any():
            gap = abs(float(correct[sel].mean()) - float(conf[sel].mean()))
            ece += sel.mean() * gap
            rows.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "n": int(sel.sum()),
                         "confidence": float(conf[sel].mean()), "accuracy": float(correct[sel].mean())})
    return {"ece": float(ece), "bins": rows}


def classification_metrics(y: np.ndarray, probs: np.ndarray, classes=CLASSES) -> dict:
    pred = probs.argmax(1)
    k = len(classes)
    confusion = np.zeros((k, k), int)
    np.add.at(confusion, (y, pred), 1)
    per_class = {}
    for i, c in enumerate(classes):
        tp, support, predicted = confusion[i, i], confusion[i].sum(), confusion[:, i].sum()
        p = tp / predicted if predicted else 0.0
        r = tp / support if support else 0.0
        per_class[c] = {"precision": float(p), "recall": float(r), "f1": float(2 * p * r / (p + r) if p + r else 0.0),
                        "support": int(support)}
    present = [c for i, c in enumerate(classes) if confusion[i].sum()]
    cal = reliability(probs, y)
    return {
        "n": int(len(y)),
        "accuracy": float((pred == y).mean()) if len(y) else 0.0,
        "macro_f1": float(np.mean([per_class[c]["f1"] for c in present])) if present else 0.0,
        "per_class": per_class,
        "confusion_matrix": confusion.tolist(),
        "ece": cal["ece"],
        "reliability": cal["bins"],
    }


def slice_dices(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-slice Dice of boolean (N, H, W) masks; a slice where both are empty counts as 1."""
    inter = (pred & truth).sum((1, 2))
    total = pred.sum((1, 2)) + truth.sum((1, 2))
    return np.where(total > 0, 2 * inter / np.maximum(total, 1), 1.0)


# ---------------------------------------------------------------- explanation quality


def cam_mask(cam: np.ndarray, head: np.ndarray, percentile: float) -> np.ndarray:
    """The pipeline's thresholding on one 2D map (as a one-slice volume)."""
    mask, _ = threshold_mod.threshold_heatmap(cam[None], head[None], (1.0, 1.0, 1.0), percentile)
    return mask[0]


def pointing_hit(cam: np.ndarray, truth: np.ndarray, tolerance_model_px: float) -> bool:
    """Is the map's maximum within the tolerance of the true tumour?"""
    peak = np.unravel_index(np.argmax(cam), cam.shape)
    distance = ndi.distance_transform_edt(~truth)
    return bool(distance[peak] <= tolerance_model_px)


# ---------------------------------------------------------------- shortcut check

STYLES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "as is": lambda x: x,
    "gamma 0.6": lambda x: x**0.6,
    "gamma 1.6": lambda x: x**1.6,
    "low contrast": lambda x: 0.25 + 0.5 * x,
    "blurred": lambda x: ndi.gaussian_filter(x, (0, 1.5, 1.5)),
}


def style_shortcut_check(model: LoadedModel, t: dict[str, np.ndarray], batch_size: int = 32,
                         limit: int | None = None, seed: int = 0) -> dict:
    """Br35H 'no tumour' images come in mixed sequences: a model can learn 'looks unlike CE-T1' = no tumour.
    The share of tumour slices called no_tumor should not jump when only the intensity style changes.
    Only the class matters here, so only the classifier path runs; `limit` subsamples the tumour slices."""
    classes = list(model.cfg.classes)
    tumour = np.nonzero(t["labels"] != classes.index("no_tumor"))[0]
    if limit is not None and len(tumour) > limit:
        tumour = np.sort(np.random.default_rng(seed).choice(tumour, limit, replace=False))
    x = t["images"][tumour].astype(np.float32)
    clf = model.classifier()
    out = {}
    for name, style in STYLES.items():
        styled = np.clip(style(x), 0, 1).astype(np.float32)
        with torch.no_grad():
            calls = np.concatenate([clf(torch.from_numpy(styled[s : s + batch_size, None])).argmax(1).numpy()
                                    for s in range(0, len(styled), batch_size)])
        out[name] = float((calls == classes.index("no_tumor")).mean())
    return {"tumour_slices_called_no_tumor": out, "n": int(len(tumour))}


# ---------------------------------------------------------------- the harness


def load_folder(data: Path | None, no_tumor: Path | None, split: str, size: int, cache: Path | None):
    if data is None and no_tumor is None:
        raise BrainXAIError("nothing to evaluate: give --data (figshare layout) and/or --no-tumor")
    if split not in ("all", "val"):
        raise BrainXAIError(f"unknown split '{split}': use 'all' or 'val'")
    samples = []
    for found in ([figshare_samples(Path(data))] if data else []) + ([no_tumor_samples(Path(no_tumor))] if no_tumor else []):
        samples += train_val_split(found)[1] if split == "val" else found
    return samples, tensorise(samples, size, cache)


def evaluate(
    model: LoadedModel,
    data: Path | None,
    no_tumor: Path | None = None,
    options: EvalOptions | None = None,
    cache: Path | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    healthy_volumes: list[Path] = (),
) -> dict:
    """All metrics as a JSON-ready dict. progress(stage, done, total) is called as work proceeds."""
    o = options or EvalOptions()
    _, t = load_folder(data, no_tumor, o.split, model.cfg.input_size, cache)
    metrics = evaluate_tensors(model, t, o, progress)
    metrics["settings"].update(data=str(data) if data else None, no_tumor=str(no_tumor) if no_tumor else None)
    if healthy_volumes:
        metrics["healthy_volumes"] = [healthy_volume_check(model, p, progress) for p in healthy_volumes]
    return metrics


def healthy_volume_check(model: LoadedModel, path: Path, progress=None) -> dict:
    """Shortcut guard on a real tumour-free head: the share of its brain slices (the pipeline's own slice
    selection, after registration) called no_tumor. Br35H no-tumour images are of mixed sequences, so a
    model can score well on them by style alone; a healthy volume from another source cannot be gamed so."""
    from .. import pipeline
    from ..load import read_input

    image, info = read_input(path)
    tick = (lambda stage, f: progress(f"healthy volume {Path(path).name}", int(100 * f), 100)) if progress else None
    r = pipeline.analyse(image, info, pipeline.Options(methods=()), model=model, progress=tick)
    calls = r.slice_probabilities.argmax(1)
    return {
        "volume": Path(path).name,  # the file name only: no folders, no identifiers
        "brain_slices": int(len(calls)),
        "no_tumor_rate": float(np.mean(calls == list(model.cfg.classes).index("no_tumor"))),
        "diagnosis": r.findings["diagnosis"]["label"],
        "lesion_ml": r.findings["lesion"]["volume_ml"],
        "registration_converged": bool(r.findings["registration"]["converged"]),
    }


def evaluate_tensors(
    model: LoadedModel,
    t: dict[str, np.ndarray],
    options: EvalOptions | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict:
    """The metrics on slices already prepared by data.tensorise."""
    o = options or EvalOptions()
    methods = [get_method(m) for m in o.methods]
    if o.enhance:
        from ..explain.enhance import enhance
    x = t["images"].astype(np.float32)
    y = t["labels"]
    tick = progress or (lambda stage, done, total: None)

    tick("model", 0, len(x))
    probs, seg = predict_slices(model, x, o.batch_size, lambda f: tick("model", round(f * len(x)), len(x)))
    metrics = classification_metrics(y, probs, model.cfg.classes)
    tumour = np.nonzero(np.array([model.cfg.classes[i] != "no_tumor" for i in y]) & t["masks"].any((1, 2)))[0]
    dices = slice_dices(seg[tumour] > 0.5, t["masks"][tumour])
    metrics["segmentation_dice"] = float(dices.mean()) if len(dices) else None
    metrics["segmentation_dice_median"] = float(np.median(dices)) if len(dices) else None
    metrics["n_tumour_slices"] = int(len(tumour))
    if len(tumour):
        tick("style check", 0, 1)
        metrics["shortcut_check"] = style_shortcut_check(model, t, o.batch_size, o.style_slices, o.seed)

    rng = np.random.default_rng(o.seed)

    def subsample(limit):
        if limit is None or len(tumour) <= limit:
            return tumour
        return np.sort(rng.choice(tumour, limit, replace=False))

    perturb = subsample(o.perturbation_slices)
    tol = o.pointing_tolerance_px / t["px_per_model_px"]
    cam_results = {}
    maps_for_perturbation = {}
    for method in methods:
        if method.name == "scorecam":
            idx = subsample(o.scorecam_slices)
        else:  # always covers the perturbation sample
            idx = np.union1d(subsample(o.max_cam_slices), perturb).astype(int)
        stage, done = f"CAM {method.title}", 0
        tick(stage, 0, len(idx))
        maps = np.zeros((len(idx), *x.shape[1:]), np.float32)
        started = time.perf_counter()
        for cls in np.unique(y[idx]):  # one target class per call: the slice's true class
            sel = np.nonzero(y[idx] == cls)[0]
            maps[sel] = method(model, x[idx[sel]], int(cls),
                               lambda f, _done=done, _n=len(sel): tick(stage, _done + round(f * _n), len(idx)))
            done += len(sel)
        if o.enhance and method.level is None:
            maps = enhance(maps, t["heads"][idx] | t["masks"][idx])
        seconds = (time.perf_counter() - started) / max(len(idx), 1)

        def cut(m, i, _method=method):
            region = t["heads"][i] | t["masks"][i]
            return (cam_mask(m, region, o.threshold_percentile) if _method.level is None else
                    threshold_mod.level_mask(m[None], region[None], (1.0, 1.0, 1.0), _method.level)[0])

        d, iou, hit, area, masks = [], [], [], [], np.zeros(maps.shape, bool)
        for k, (m, i) in enumerate(zip(maps, idx)):
            region = t["heads"][i] | t["masks"][i]
            pred = masks[k] = cut(m, i)
            truth = t["masks"][i]
            inter, union = (pred & truth).sum(), (pred | truth).sum()
            d.append(2 * inter / max(pred.sum() + truth.sum(), 1))
            iou.append(inter / max(union, 1))
            hit.append(pointing_hit(m, truth, tol[i]))
            area.append(pred.sum() / max(region.sum(), 1))
        # What the model says from the mask alone (the rest blurred away) and without it (inpainted from around it),
        # for the map of the class the model calls, as the product explains its call: on a misread slice the true
        # class's map above (for Dice and pointing) explains no call, so that slice's map is made again for the call.
        call = probs[idx].argmax(1)
        evidence = masks.copy()
        for cls in np.unique(call[call != y[idx]]):
            sel = np.nonzero((call == cls) & (call != y[idx]))[0]
            again = method(model, x[idx[sel]], int(cls))
            if o.enhance and method.level is None:
                again = enhance(again, t["heads"][idx[sel]] | t["masks"][idx[sel]])
            evidence[sel] = [cut(m, i) for m, i in zip(again, idx[sel])]
        kept = predict_classes(model, keep_only(x[idx], evidence), o.batch_size).argmax(1) == call
        flipped = predict_classes(model, inpaint(x[idx], evidence), o.batch_size).argmax(1) != call
        cam_results[method.name] = {"title": method.title, "n": int(len(idx)), "dice": float(np.mean(d)),
                                    "iou": float(np.mean(iou)), "pointing_game": float(np.mean(hit)),
                                    "kept_prediction": float(kept.mean()), "removal_changes_call": float(flipped.mean()),
                                    "area_percent": float(100 * np.mean(area)), "seconds_per_slice": float(seconds),
                                    "deletion_auc": None, "insertion_auc": None, "n_perturbation": 0}
        keep = np.isin(idx, perturb)
        maps_for_perturbation[method.name] = (idx[keep], maps[keep])
    # Score-CAM may be subsampled below the perturbation sample: every method is scored on its own slices.
    cam_results[RANDOM_BASELINE] = {"deletion_auc": None, "insertion_auc": None, "n_perturbation": 0}
    if len(perturb):
        maps_for_perturbation[RANDOM_BASELINE] = (perturb, random_maps(len(perturb), x.shape[-1], o.seed))
    for name, (idx, maps) in maps_for_perturbation.items():
        if not len(idx):
            continue
        dels, ins = [], []
        tick(f"deletion/insertion {name}", 0, len(idx))
        for s in range(0, len(idx), o.batch_size):
            b = slice(s, s + o.batch_size)
            dl, il = deletion_insertion(model, x[idx[b]], maps[b], y[idx[b]])
            dels.append(dl)
            ins.append(il)
            tick(f"deletion/insertion {name}", min(s + o.batch_size, len(idx)), len(idx))
        cam_results[name].update(deletion_auc=float(np.concatenate(dels).mean()),
                                 insertion_auc=float(np.concatenate(ins).mean()), n_perturbation=int(len(idx)))
    baseline = cam_results.pop(RANDOM_BASELINE)
    metrics["cam"] = cam_results
    metrics["cam_random_baseline"] = {k: baseline[k] for k in ("deletion_auc", "insertion_auc", "n_perturbation")}
    metrics["settings"] = {
        **asdict(o),
        "model": model.info(),
        "cam_layer": model.cfg.cam_layer,
        "temperature": model.cfg.temperature,
        "cam_target": "true class of the slice",
        "resolution": f"model input {model.cfg.input_size} px",
        "perturbation_fractions": PERTURBATION_FRACTIONS.tolist(),
        "subsampling": {m: cam_results[m]["n"] for m in cam_results} | {"tumour_slices": int(len(tumour))},
    }
    return metrics


# ---------------------------------------------------------------- outputs


def render_markdown(m: dict) -> str:
    s = m["settings"]
    lines = [
        f"# Evaluation of {s['model']['name']} {s['model']['version']}",
        "",
        f"Split: {s['split']}; {m['n']} slices ({m['n_tumour_slices']} with a tumour mask); model sha256 "
        f"{s['model']['sha256'][:12]}; temperature {s['temperature']}.",
        "",
        "| metric | value |",
        "|---|---|",
        f"| accuracy | {m['accuracy']:.3f} |",
        f"| macro F1 | {m['macro_f1']:.3f} |",
        f"| ECE ({ECE_BINS} bins) | {m['ece']:.3f} |",
        f"| tumour Dice (segmentation head, mean per slice) | {m['segmentation_dice']:.3f} |" if m["segmentation_dice"]
        is not None else "| tumour Dice | n/a |",
        "",
        "| class | precision | recall | F1 | support |",
        "|---|---|---|---|---|",
        *[f"| {c} | {v['precision']:.3f} | {v['recall']:.3f} | {v['f1']:.3f} | {v['support']} |"
          for c, v in m["per_class"].items()],
    ]
    f = lambda v, digits=3: "n/a" if v is None else f"{v:.{digits}f}"  # noqa: E731
    if "shortcut_check" in m:
        rates = m["shortcut_check"]["tumour_slices_called_no_tumor"]
        lines += ["", "Tumour slices called no_tumor when only the intensity style changes (shortcut check): "
                  + ", ".join(f"{k} {v:.3f}" for k, v in rates.items()) + "."]
    for h in m.get("healthy_volumes", []):
        lines += ["", f"Healthy volume `{h['volume']}`: {h['no_tumor_rate']:.3f} of its {h['brain_slices']} brain "
                  f"slices called no_tumor; volume diagnosis {h['diagnosis']}, segmented lesion {h['lesion_ml']} mL."]
    lines += [
        "",
        f"Maps for the true class{' (sharpened: percentile stretch + CLAHE)' if s.get('enhance') else ''}, "
        f"mask = {s['threshold_percentile']:g}th percentile in the head (Minimal evidence: its own mask, probability "
        "at least 0.5); pointing game "
        f"tolerance {s['pointing_tolerance_px']:g} original px; deletion (lower is better) and insertion (higher is "
        "better) AUC of the class probability; kept: the model's call unchanged when only the mask is kept (the rest "
        "blurred); removal: the call changed when the mask is inpainted from the tissue around it (kept and removal "
        "use the map of the class the model calls: a misread slice's map is made again for its call); area: the mask's "
        "share of the head; time: the map alone, per slice.",
        "",
        "| method | slices | Dice | IoU | pointing game | deletion AUC | insertion AUC | kept | removal changes call "
        "| area (% of head) | s per slice |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in m["cam"].values():
        lines.append(f"| {c['title']} | {c['n']} | {f(c['dice'])} | {f(c['iou'])} | {f(c['pointing_game'])} | "
                     f"{f(c.get('deletion_auc'))} | {f(c.get('insertion_auc'))} | {f(c.get('kept_prediction'))} | "
                     f"{f(c.get('removal_changes_call'))} | {f(c.get('area_percent'), 1)} | "
                     f"{f(c.get('seconds_per_slice'), 4)} |")
    b = m["cam_random_baseline"]
    lines.append(f"| random map (baseline) | {b['n_perturbation']} | | | | {f(b['deletion_auc'])} | "
                 f"{f(b['insertion_auc'])} | | | | |")
    return "\n".join(lines) + "\n"


def save_plots(m: dict, confusion_png: Path, reliability_png: Path, classes=CLASSES) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.array(m["confusion_matrix"])
    fig, ax = plt.subplots(figsize=(5, 4.4))
    ax.imshow(cm, cmap="Blues")
    for (r, c), v in np.ndenumerate(cm):
        ax.text(c, r, str(v), ha="center", va="center", color="white" if v > cm.max() / 2 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=30)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("prediction")
    ax.set_ylabel("truth")
    ax.set_title(f"accuracy {m['accuracy']:.3f}")
    fig.tight_layout()
    fig.savefig(confusion_png, dpi=120, format="png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(4.4, 4.4))
    bins = m["reliability"]
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    ax.bar([(b["lo"] + b["hi"]) / 2 for b in bins], [b["accuracy"] for b in bins], width=1 / ECE_BINS,
           edgecolor="k", alpha=0.7, label="accuracy")
    ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o", color="C1", label="per bin")
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(f"reliability, ECE {m['ece']:.3f}")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(reliability_png, dpi=120, format="png")
    plt.close(fig)


def write_metrics(m: dict, out: Path, overwrite: bool = False) -> list[Path]:
    """METRICS.json plus METRICS.md, METRICS_confusion.png, METRICS_reliability.png beside it."""
    out = Path(out)
    paths = [out, out.with_suffix(".md"), out.with_name(out.stem + "_confusion.png"),
             out.with_name(out.stem + "_reliability.png")]
    existing = [p for p in paths if p.exists()]
    if existing and not overwrite:
        raise BrainXAIError(f"{existing[0]} exists: choose another --out or pass --overwrite")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = [p.with_name(f".{p.name}.tmp") for p in paths]
    try:
        tmp[0].write_text(json.dumps(m, indent=2), encoding="utf-8")
        tmp[1].write_text(render_markdown(m), encoding="utf-8")
        save_plots(m, tmp[2], tmp[3], m["settings"]["model"]["classes"])
        for t, p in zip(tmp, paths):
            t.replace(p)
    finally:
        for t in tmp:
            t.unlink(missing_ok=True)
    return paths
