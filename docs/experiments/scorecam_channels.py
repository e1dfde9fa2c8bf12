"""Score-CAM with every channel (pytorch-grad-cam's ScoreCAM) against ours (the most varying channels only) on
random validation tumour slices: Dice of the thresholded map and pointing game, computed as `brainxai evaluate`
does, and the maps' correlation. Run from the repository root: python docs/experiments/scorecam_channels.py 60
"""

import contextlib
import io
import sys
from pathlib import Path

import numpy as np
import torch
from pytorch_grad_cam import ScoreCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from brainxai.lab.evaluate import EvalOptions, cam_mask, load_folder, pointing_hit
from brainxai.explain import get_method
from brainxai.explain.scorecam import SelectiveScoreCAM
from brainxai.model import load_model

n = int(sys.argv[1]) if len(sys.argv) > 1 else 60
data = Path(sys.argv[2]) if len(sys.argv) > 2 else Path("../shared/data/figshare")
model, o = load_model(), EvalOptions()
_, t = load_folder(data, None, "val", model.cfg.input_size, None)
tumour = np.nonzero(t["masks"].any((1, 2)))[0]
idx = np.sort(np.random.default_rng(1).choice(tumour, n, replace=False))
x, y = t["images"][idx].astype(np.float32), t["labels"][idx]
tol = o.pointing_tolerance_px / np.broadcast_to(t["px_per_model_px"], t["labels"].shape)[idx]
view = model.classifier()


def score(maps):
    dice, hits = [], []
    for m, i, tl in zip(maps, idx, tol):
        pred, truth = cam_mask(m, t["heads"][i] | t["masks"][i], o.threshold_percentile), t["masks"][i]
        dice.append(2 * (pred & truth).sum() / max(pred.sum() + truth.sum(), 1))
        hits.append(pointing_hit(m, truth, tl))
    return f"Dice {np.mean(dice):.3f}, pointing {np.mean(hits):.3f}"


full = []
for xi, yi in zip(x, y):
    with ScoreCAM(model=view, target_layers=[view.target_layer()]) as cam, contextlib.redirect_stderr(io.StringIO()):
        full.append(cam(input_tensor=torch.from_numpy(xi[None, None]), targets=[ClassifierOutputTarget(int(yi))])[0])
print(f"{n} validation tumour slices; every channel (pytorch-grad-cam): {score(full)}")
for k in (12, 24):
    SelectiveScoreCAM.channels = k
    for precision in ("fp32", "fast"):
        maps = np.stack([get_method("scorecam")(model, xi[None], int(yi), precision=precision)[0] for xi, yi in zip(x, y)])
        corr = np.median([np.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in zip(full, maps)])
        print(f"{k} most varying channels, {precision}: {score(maps)}, median correlation with every channel {corr:.3f}")
