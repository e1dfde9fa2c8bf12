"""Adebayo et al.'s model-randomisation check for the model-agnostic maps on validation tumour slices: the mean
Spearman rank correlation, inside the head, between each map of the trained model and the same map read through a
re-initialised network (prototypes and mask predictor kept; mincam-opt optimised on the network it explains).
Usage: python docs/dev/randomisation_check.py [DATA]"""

import copy
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from brainxai import CLASSES
from brainxai.explain import mincam, prototype
from brainxai.lab.datasets import load_split
from brainxai.model import head_features, load_model

data = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data")
model = load_model()
*_, va = load_split(data, model.cfg.input_size)
idx = np.nonzero((va["labels"] != CLASSES.index("no_tumor")) & va["masks"].any((1, 2)))[0]
idx = idx[:: max(len(idx) // 32, 1)][:32]
x, heads, labels = va["images"][idx].astype(np.float32), va["heads"][idx], va["labels"][idx]

twin = copy.deepcopy(model)
twin._fast, twin.sha256 = None, "randomised"
torch.manual_seed(0)
for module in twin.net.modules():
    if hasattr(module, "reset_parameters"):
        module.reset_parameters()
twin.net.eval()


def up(maps):
    t = torch.from_numpy(np.ascontiguousarray(maps[:, None], np.float32))
    return torch.nn.functional.interpolate(t, size=x.shape[1:], mode="bilinear", align_corners=False)[:, 0].numpy()


def rho(a, b):
    return float(np.nanmean([spearmanr(p[h], q[h]).statistic for p, q, h in zip(a, b, heads)]))


stored = prototype.load_prototypes(model)
rows = {}
for name, depth in prototype.DEPTHS.items():
    maps = []
    for m in (model, twin):
        feats = prototype.encoder_features(m, x)[depth]
        maps.append(up(np.concatenate([prototype.contrast_map(feats[i : i + 1], stored, depth, CLASSES[labels[i]])
                                       for i in range(len(x))])))
    rows[name] = rho(*maps)
predictor = mincam.load_predictor(model)
maps = []
for m in (model, twin):
    f = torch.from_numpy(head_features(m, x))
    with torch.no_grad():
        maps.append(mincam.upsampled(mincam.mask_logits(predictor, m.net, f, torch.from_numpy(labels)), x.shape[-1])[:, 0]
                     .numpy())
rows["mincam"] = rho(*maps)
maps = []  # mincam-opt: each slice's mask optimised further on the network it explains
for m in (model, twin):
    f, xt, t = torch.from_numpy(head_features(m, x)), torch.from_numpy(x[:, None]), torch.from_numpy(labels)
    with torch.no_grad():
        logits = mincam.mask_logits(predictor, m.net, f, t)
    maps.append(mincam.upsampled(mincam.refine(m, xt, f, logits, t), x.shape[-1])[:, 0].numpy())
rows["mincam-opt"] = rho(*maps)
print(f"{len(x)} validation tumour slices; mean Spearman (inside the head), trained vs randomised network:")
for k, v in rows.items():
    print(f"  {k}: {v:.3f}")
