"""Fit what the model-agnostic explainers need on a trained model: the minimal-evidence mask predictor
(explain/mincam.py) and the prototypes (explain/prototype.py). Both are written beside the weights with their sha256;
training data only (figshare and Br35H training blocks, LGG training patients), never the validation split."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .. import progress as progress_mod
from ..explain import mincam
from ..model import LoadedModel, _sha256, load_model

MINCAM_STEPS = 600  # batches of 16: about 30 minutes on 2 cores (resumable)
FREE_FRACTION = 0.2  # of each batch: tumour-free slices (the mask must also keep a "no tumour" call)


def mincam_loss(model: LoadedModel, predictor: mincam.MaskPredictor, x: torch.Tensor, head: torch.Tensor):
    """The objective (explain.mincam.objective) on a batch (N, 1, S, S) with head masks, for the predicted masks of
    each slice's own call; returns (mean loss, per-slice kept, per-slice area)."""
    with torch.no_grad():
        f0 = model.net.head_features(x)
        target = model.net.classification_head(f0).argmax(1)
    logits = mincam.mask_logits(predictor, model.net, f0, target)
    loss, kept, area = mincam.objective(model.net, model.cfg.temperature, x, head, logits, f0, target)
    return loss.mean(), kept, area


def training_slices(data_root: Path, size: int, cache: Path | None) -> dict[str, np.ndarray]:
    """Images, head masks and labels of the training part: figshare + Br35H training blocks, LGG training patients."""
    from .datasets import figshare_samples, load_split, patient_split, tensorise

    _, _, tr, _ = load_split(Path(data_root), size, cache)
    lgg = tensorise(patient_split(figshare_samples(Path(data_root) / "lgg"))[0], size, cache)
    return {k: np.concatenate([tr[k], lgg[k]]) for k in ("images", "heads", "masks", "labels")}


def fit_mincam(model: LoadedModel, data: dict[str, np.ndarray], steps: int = 600, batch: int = 16, lr: float = 2e-3,
               seed: int = 0, checkpoint: Path | None = None, log: Callable[[str], None] = print,
               cancel=None) -> tuple[mincam.MaskPredictor, dict]:
    """Train the mask predictor with the model frozen; resumes from `checkpoint` (written every 50 steps)."""
    from ..lab.train import NO_TUMOR

    for p in model.net.parameters():
        p.requires_grad_(False)
    predictor = mincam.MaskPredictor(0, len(model.cfg.classes))  # class maps only: see MaskPredictor
    opt = torch.optim.Adam(predictor.parameters(), lr=lr)
    gen = np.random.default_rng(seed)
    tumour = np.nonzero((data["labels"] != NO_TUMOR) & data["masks"].any((1, 2)))[0]
    free = np.nonzero(data["labels"] == NO_TUMOR)[0]
    start, history = 0, []
    if checkpoint is not None and checkpoint.is_file():
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        predictor.load_state_dict(state["predictor"])
        opt.load_state_dict(state["opt"])
        start, history = state["step"], state["history"]
        gen = np.random.default_rng([seed, start])
        log(f"resumed at step {start}")
    n_free = round(batch * FREE_FRACTION)
    began, window = time.perf_counter(), []
    for step in range(start, steps):
        progress_mod.check(cancel)
        idx = np.concatenate([gen.choice(tumour, batch - n_free, replace=False), gen.choice(free, n_free, replace=False)])
        x = torch.from_numpy(data["images"][idx, None].astype(np.float32))
        head = torch.from_numpy(data["heads"][idx, None].astype(np.float32))
        predictor.train()
        loss, kept, area = mincam_loss(model, predictor, x, head)
        opt.zero_grad()
        loss.backward()
        opt.step()
        window.append((float(loss.detach()), float(kept[: batch - n_free].float().mean()), float(area[: batch - n_free].mean())))
        if (step + 1) % 10 == 0:
            loss_m, kept_m, area_m = np.mean(window, 0)
            history.append({"step": step + 1, "loss": round(float(loss_m), 4), "kept_tumour": round(float(kept_m), 3),
                            "area_tumour": round(float(area_m), 4)})
            window = []
            log(f"step {step + 1}/{steps}: loss {loss_m:.3f}, tumour slices kept {kept_m:.2f}, area {100 * area_m:.1f}% "
                f"of the head ({time.perf_counter() - began:.0f} s)")
        if checkpoint is not None and ((step + 1) % 50 == 0 or step + 1 == steps):
            tmp = checkpoint.with_name(checkpoint.name + ".tmp")
            torch.save({"predictor": predictor.state_dict(), "opt": opt.state_dict(), "step": step + 1,
                        "history": history}, tmp)
            tmp.replace(checkpoint)
    predictor.eval()
    summary = {"steps": steps, "batch": batch, "lr": lr, "seed": seed, "tumour_slices": int(len(tumour)),
               "tumour_free_slices": int(len(free)), "free_fraction": FREE_FRACTION,
               "weights": {"match": mincam.MATCH_WEIGHT, "area": mincam.AREA_WEIGHT,
                           "area_limit": mincam.AREA_LIMIT, "tv": mincam.TV_WEIGHT}, "level": mincam.LEVEL,
               "history": history, "data": "figshare + Br35H training blocks, LGG training patients"}
    return predictor, summary


def save_mincam(predictor: mincam.MaskPredictor, summary: dict, weights: Path) -> Path:
    layers = predictor.layers
    classes = layers[-1].out_channels
    state = {"weights_sha256": _sha256(Path(weights)), "channels": layers[1].in_channels - classes,
             "classes": classes, "width": layers[1].out_channels,
             "state_dict": {k: v.half() for k, v in predictor.state_dict().items()}, "summary": json.dumps(summary)}
    path = mincam.predictor_path(weights)
    buf = io.BytesIO()
    torch.save(state, buf)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(path)
    mincam._load.cache_clear()
    return path


def fit_explainers(data_root: Path, weights: Path, cache: Path | None, work: Path, steps: int = MINCAM_STEPS,
                   which: tuple[str, ...] = ("prototypes", "mincam"), log: Callable[[str], None] = print) -> list[Path]:
    """Fit `which` on `weights` and write each beside them; `work` holds the mask predictor's resumable checkpoint."""
    model = load_model(weights)
    data = training_slices(data_root, model.cfg.input_size, cache)
    written = []
    if "prototypes" in which:
        written.append(save_prototypes(fit_prototypes(model, data, log=log), weights))
        log(f"prototypes written: {written[-1]}")
    if "mincam" in which:
        work.mkdir(parents=True, exist_ok=True)
        checkpoint = work / f"mincam-{_sha256(Path(weights))[:12]}.pt"
        predictor, summary = fit_mincam(model, data, steps=steps, checkpoint=checkpoint, log=log)
        written.append(save_mincam(predictor, summary, weights))
        checkpoint.unlink(missing_ok=True)
        log(f"minimal-evidence predictor written: {written[-1]}")
    return written

PROTOTYPES_PER_CLASS = 4
PROTOTYPE_VECTORS = 20000  # per depth and class: sampled locations the k-means runs on
PROTOTYPE_SLICES = 1600  # training slices the prototypes are fitted on (all classes, sampled)


def _pooled(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(N, S, S) bool -> the fraction of each feature cell it covers, (N, h, w)."""
    t = torch.from_numpy(mask[:, None].astype(np.float32))
    return F.adaptive_avg_pool2d(t, size)[:, 0].numpy()


def fit_prototypes(model: LoadedModel, data: dict[str, np.ndarray], seed: int = 0,
                   log: Callable[[str], None] = print) -> dict[str, np.ndarray]:
    """'{depth}/{class}' -> (k, C) unit prototypes at every depth of explain.prototype.DEPTHS: k-means centres of
    the features at tumour locations (per tumour class, and all together) and at tumour-free head locations."""
    from sklearn.cluster import MiniBatchKMeans

    from ..explain import prototype

    rng = np.random.default_rng(seed)
    pick = np.sort(rng.permutation(len(data["images"]))[:PROTOTYPE_SLICES])
    images = data["images"][pick].astype(np.float32)
    labels, masks, heads = data["labels"][pick], data["masks"][pick], data["heads"][pick]
    tumour_classes = [c for c in model.cfg.classes if c != "no_tumor"]
    vectors: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(images), 64):
        feats = prototype.encoder_features(model, images[start : start + 64])
        b = slice(start, start + 64)
        for depth in sorted(set(prototype.DEPTHS.values())):
            f = feats[depth]
            size = f.shape[-2:]
            tumour, head = _pooled(masks[b], size), _pooled(heads[b], size)
            cells = np.moveaxis(f, 1, -1)  # (n, h, w, C)
            normal = (head >= 0.5) & (tumour == 0)
            vectors.setdefault(f"{depth}/{prototype.NORMAL}", []).append(cells[normal])
            for c in tumour_classes:
                inside = (tumour >= 0.5) & (labels[b] == model.cfg.classes.index(c))[:, None, None]
                vectors.setdefault(f"{depth}/{c}", []).append(cells[inside])
                vectors.setdefault(f"{depth}/{prototype.TUMOUR}", []).append(cells[inside])
        log(f"prototype features: {min(start + 64, len(images))}/{len(images)} slices")
    out, counts = {}, {}
    for key, parts in vectors.items():
        v = np.concatenate(parts)
        counts[key] = int(len(v))
        v = v[rng.permutation(len(v))[:PROTOTYPE_VECTORS]]
        v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-6)
        km = MiniBatchKMeans(PROTOTYPES_PER_CLASS, random_state=seed, n_init=3, batch_size=2048).fit(v)
        centres = km.cluster_centers_
        out[key] = (centres / np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-6)).astype(np.float32)
    out["summary"] = np.array(json.dumps({
        "slices": int(len(images)), "per_class": PROTOTYPES_PER_CLASS, "locations": counts, "seed": seed,
        "depths": prototype.DEPTHS, "method": "MiniBatchKMeans on unit feature vectors; tumour locations: feature "
        "cells at least half inside the tumour mask; normal: at least half in the head, none in the tumour",
        "data": "figshare + Br35H training blocks, LGG training patients"}))
    return out


def save_prototypes(prototypes: dict[str, np.ndarray], weights: Path) -> Path:
    from ..explain import prototype

    path = prototype.prototypes_path(weights)
    tmp = path.with_name(f".{path.name}.tmp.npz")
    np.savez(tmp, weights_sha256=np.array(_sha256(Path(weights))), **prototypes)
    tmp.replace(path)
    prototype._load.cache_clear()
    return path
