"""Minimal evidence: the smallest smooth region the classifier needs to keep its call (Med-CAM style).

The mask keeps the image inside it and blurs the rest away (the insertion curve's imputer, faithfulness.keep_only);
it was trained so that the image so masked keeps the prediction and the head's activations (cross-entropy +
feature matching), under area and total-variation penalties (Fong & Vedaldi 2017, "meaningful perturbations").
Optimising one mask per slice takes tens of forward and backward passes; a small convolutional predictor on the
head's class maps (computed from the features the model stage already has), fitted once on training slices with the
classifier frozen (amortised, as in Dabkowski & Gal 2017), gives the mask in one pass.

The heatmap is the mask's probability; the mask is where it is at least LEVEL. Where that region does not keep the
call, the map's logits are shifted (its order unchanged) so that LEVEL cuts the smallest larger region that does,
up to 10 % of the head (`sufficient`): the mask is then checked evidence, not a hoped-for one.
The predictor lies beside the weights it was fitted on (PREDICTOR) and says which (their sha256);
`brainxai fit-explainers` (run by `brainxai train`) rebuilds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import TITLES
from .. import progress as progress_mod
from ..errors import BrainXAIError
from ..faithfulness import blur_imputer
from ..model import LoadedModel, as_batch, head_features
from ..preprocess import head_mask

PREDICTOR = "mincam.pt"
LEVEL = 0.5  # mask probability at and above which a pixel is kept evidence
BOUND = 6.0  # mask logits stay within +-BOUND
# The objective's weights, per slice (chosen on training slices; the validation split only measures the result).
# Cross-entropy keeps the call; matching keeps the head's activations; area and TV make the region small and smooth.
MATCH_WEIGHT = 0.1
AREA_WEIGHT = 0.5
AREA_LIMIT = 0.08  # of the head: beyond it the area costs ten times as much (the target is at most 10 %)
TV_WEIGHT = 0.5
REFINE_STEPS = 10  # mincam-opt: Adam steps on each slice's own mask, from the predicted one
REFINE_MORE = 50  # mincam-opt: further steps for the slices whose region does not yet keep the call
REFINE_LR = 0.1
# When the mask at LEVEL does not keep the call, the larger cuts of the same map tried in turn (share of the head).
# Beyond 10 % the region is no longer minimal evidence: the mask stays as predicted and counts as not sufficient.
SUFFICIENT_AREAS = (0.02, 0.03, 0.04, 0.05, 0.06, 0.08, 0.10)


class MaskPredictor(nn.Module):
    """The head's class maps (N, C, h, w), and with channels > 0 its features (N, F, h, w) too -> one mask logit map
    per class (N, C, h, w).
    The default reads the class maps alone: they are the model's own evidence, so a re-initialised model gives a
    different mask (Adebayo's check). A predictor that also read the features kept their image structure through
    re-initialisation (in-head Spearman 0.40 against the trained model's masks).
    Normalised input and GELUs keep it trainable when the area penalty first pushes every logit down (with ReLUs the
    units die and the mask collapses to nothing); dilations widen its view to ~15 feature cells (half a slice) so
    it can weigh a region against its surroundings."""

    def __init__(self, channels: int, classes: int, width: int = 64):
        super().__init__()
        self.channels = channels
        self.layers = nn.Sequential(
            nn.GroupNorm(1, channels + classes),
            nn.Conv2d(channels + classes, width, 3, padding=1), nn.GELU(),
            nn.Conv2d(width, width, 3, padding=2, dilation=2), nn.GELU(),
            nn.Conv2d(width, width, 3, padding=4, dilation=4), nn.GELU(),
            nn.Conv2d(width, classes, 1))

    def forward(self, features: torch.Tensor, class_maps: torch.Tensor) -> torch.Tensor:
        # Starts from the head's own evidence (its class maps) and learns the correction; bounded, so the sigmoid
        # never saturates beyond recovery when the area penalty pushes a whole map down.
        raw = class_maps + self.layers(torch.cat([features, class_maps], 1) if self.channels else class_maps)
        return BOUND * torch.tanh(raw / BOUND)


def mask_logits(predictor: MaskPredictor, net: nn.Module, features: torch.Tensor, targets: torch.Tensor
                ) -> torch.Tensor:
    """(N, 1, h, w) mask logits on the features' grid for each slice's target class."""
    return predictor(features, net.class_maps(features))[torch.arange(len(features)), targets][:, None]


def upsampled(logits: torch.Tensor, size: int) -> torch.Tensor:
    """Mask probabilities at the slice size, bilinearly upsampled (smooth)."""
    return torch.sigmoid(nn.functional.interpolate(logits, size=(size, size), mode="bilinear", align_corners=False))


def _tv(p: torch.Tensor) -> torch.Tensor:
    return (p[..., 1:, :] - p[..., :-1, :]).abs().mean((1, 2, 3)) + (p[..., 1:] - p[..., :-1]).abs().mean((1, 2, 3))


def objective(net: nn.Module, temperature: float, x: torch.Tensor, head: torch.Tensor, logits: torch.Tensor,
              f0: torch.Tensor, target: torch.Tensor):
    """Per slice: (loss, call kept, area of the cut mask as a share of the head) for mask logits (N, 1, h, w) on
    slices x (N, 1, S, S) whose head features are f0 and call `target`. The classifier sees the mask as it will be
    cut (straight through: the cut mask forward, the soft one's gradient back)."""
    soft = upsampled(logits, x.shape[-1]) * head
    hard = (soft >= LEVEL).float()
    f1 = net.head_features(blur_imputer(x, hard + soft - soft.detach()))  # faithfulness.keep_only's edit
    out = net.classification_head(f1) / temperature
    ce = F.cross_entropy(out, target, reduction="none")
    match = ((f1 - f0) ** 2).mean((1, 2, 3)) / (f0**2).mean((1, 2, 3)).clamp_min(1e-6)
    head_area = head.sum((1, 2, 3)).clamp_min(1.0)
    area = soft.sum((1, 2, 3)) / head_area
    area_cost = AREA_WEIGHT * area + 10 * AREA_WEIGHT * (area - AREA_LIMIT).clamp_min(0)
    loss = ce + MATCH_WEIGHT * match + area_cost + TV_WEIGHT * _tv(torch.sigmoid(logits))
    return loss, out.argmax(1) == target, hard.sum((1, 2, 3)) / head_area


def heads(x: torch.Tensor) -> torch.Tensor:
    """(N, 1, S, S) float head masks of slices x (N, 1, S, S)."""
    return torch.from_numpy(np.stack([head_mask(s) for s in x[:, 0].numpy()])[:, None].astype(np.float32))


def refine(model: LoadedModel, x: torch.Tensor, f0: torch.Tensor, logits: torch.Tensor, target: torch.Tensor,
           steps: int = REFINE_STEPS, cancel=None, head: torch.Tensor | None = None) -> torch.Tensor:
    """Each slice's own mask, optimised for the objective from the predicted logits (the model is not changed).
    The cut mask makes the objective step-wise: a slice whose starting mask kept the call and whose last one does not
    keeps the starting one. Otherwise the last mask stands, even at a higher objective: one that grew towards keeping
    the call is the better start for `sufficient`'s larger cuts."""
    head = heads(x) if head is None else head
    # Starts at the given logits read as raw values: bounded again, a saturated background (near -BOUND) comes back
    # inside the bound, where its gradient is not ~0 and the mask can still grow (an exact start, through atanh, left
    # it stuck: 0.91 of validation slices kept against 0.99).
    raw = logits.detach().clone().requires_grad_()
    opt = torch.optim.Adam([raw], lr=REFINE_LR)
    for step in range(steps + 1):
        progress_mod.check(cancel)
        bounded = BOUND * torch.tanh(raw / BOUND)
        losses, kept, _ = objective(model.net, model.cfg.temperature, x, head, bounded, f0, target)
        if step == 0:
            start, start_kept = bounded.detach().clone(), kept
        if step == steps:
            worse = start_kept & ~kept
            last = bounded.detach()
            last[worse] = start[worse]
            return last
        (grad,) = torch.autograd.grad(losses.sum(), [raw])  # only the mask's gradient: no weight gradients accumulate
        raw.grad = grad
        opt.step()
    return logits.detach()  # steps < 0: nothing to optimise


def _keeps(net: nn.Module, x: torch.Tensor, keep: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return net.classification_head(net.head_features(blur_imputer(x, keep))).argmax(1) == target


def short_of_call(model: LoadedModel, x: torch.Tensor, logits: torch.Tensor, target: torch.Tensor,
                  call: torch.Tensor, head: torch.Tensor | None = None) -> torch.Tensor:
    """(N,) bool: the slices the model calls `target` (`call`) whose region at LEVEL alone does not keep that call."""
    short = call == target
    idx = torch.nonzero(short).flatten()  # only these need the classifier pass
    if len(idx):
        p = upsampled(logits[idx], x.shape[-1]) * (heads(x[idx]) if head is None else head[idx])
        short[idx] = ~_keeps(model.net, x[idx], (p >= LEVEL).float(), target[idx])
    return short


def sufficient(model: LoadedModel, x: torch.Tensor, logits: torch.Tensor, target: torch.Tensor,
               call: torch.Tensor, head: torch.Tensor | None = None, short: torch.Tensor | None = None
               ) -> torch.Tensor:
    """Each slice's logits shifted so that LEVEL cuts the smallest region that keeps the call: the mask at LEVEL
    when it does, else the first of SUFFICIENT_AREAS' cuts of the same map that does (one classifier pass per cut,
    only for slices still short). A shift of all logits keeps the map's order, so the heatmap ranks as predicted.
    Slices the model does not call `target` (`call`), or that no cut up to the limit keeps, are left as they are.
    `head` and `short` (short_of_call's answer for these logits), when the caller has them, save their work."""
    head = heads(x) if head is None else head
    p = upsampled(logits, x.shape[-1]) * head
    need = short_of_call(model, x, logits, target, call, head) if short is None else short.clone()
    shift = torch.zeros(len(x))
    head_area = head.sum((1, 2, 3))
    for area in SUFFICIENT_AREAS:
        k = (area * head_area).round().long().clamp_min(1)
        level = torch.stack([q.flatten().topk(int(n)).values[-1] for q, n in zip(p, k)])
        idx = torch.nonzero(need & (level < LEVEL) & (level > 0)).flatten()
        if not len(idx):
            continue
        ok = _keeps(model.net, x[idx], (p[idx] >= level[idx, None, None, None]).float(), target[idx])
        shift[idx[ok]] = torch.logit(level[idx[ok]])
        need[idx[ok]] = False
        if not need.any():
            break
    return logits - shift[:, None, None, None]


def predictor_path(weights: Path) -> Path:
    return Path(weights).with_name(PREDICTOR)


@lru_cache(maxsize=2)
def _load(path: str, sha256: str) -> MaskPredictor:
    p = Path(path)
    if not p.is_file():
        raise BrainXAIError(f"no minimal-evidence predictor beside the model weights ({p.name} in {p.parent}): run "
                            "'brainxai fit-explainers --weights WEIGHTS', or choose another method")
    state = torch.load(p, map_location="cpu", weights_only=True)
    if state["weights_sha256"] != sha256:
        raise BrainXAIError(f"{p.name} was fitted on other model weights (sha256 {state['weights_sha256'][:12]}, "
                            f"loaded {sha256[:12]}): run 'brainxai fit-explainers --weights WEIGHTS'")
    predictor = MaskPredictor(state["channels"], state["classes"], state["width"])
    predictor.load_state_dict({k: v.float() for k, v in state["state_dict"].items()})
    return predictor.eval()


def load_predictor(model: LoadedModel) -> MaskPredictor:
    if model.path is None:
        raise BrainXAIError("the minimal-evidence mask needs a model loaded from a weights file")
    return _load(str(predictor_path(model.path)), model.sha256)


@dataclass(frozen=True)
class MinimalEvidence:
    name: str = "mincam"
    title: str = TITLES["mincam"]
    level: float | None = LEVEL  # the heatmap is a probability: masks are cut at this level, not at a percentile
    refine_steps: int = 0  # > 0: the mask of each slice that makes the call explained is optimised further from the
    # predicted one (mincam-opt), and by REFINE_MORE steps more where its region does not yet keep the call
    batch_size: int = 64

    def __call__(self, model: LoadedModel, slices: np.ndarray, target: int, progress=None, cancel=None,
                 features: np.ndarray | None = None, precision: str = "fp32") -> np.ndarray:
        """slices (N, S, S) in [0, 1] -> mask probabilities (N, S, S) for class index `target` (same signature as
        CamMethod)."""
        predictor = load_predictor(model)
        if not hasattr(model.net, "class_maps"):
            raise BrainXAIError("the minimal-evidence mask needs a model whose class head pools a decoder block "
                                "(BrainXAI 0.3 or later): choose another method")
        if features is None:
            features = head_features(model, slices, precision=precision)
        out = np.zeros(slices.shape, np.float32)
        batch = self.batch_size if not self.refine_steps else 8  # optimisation: activations of 8 slices at a time
        for start in range(0, len(slices), batch):
            progress_mod.check(cancel)
            b = slice(start, min(start + batch, len(slices)))
            f = torch.from_numpy(np.ascontiguousarray(features[b], np.float32))
            targets = torch.full((len(f),), int(target))
            with torch.no_grad():
                logits = mask_logits(predictor, model.net, f, targets)
                call = model.net.classification_head(f).argmax(1)
            x = as_batch(slices[b])
            head = heads(x)
            mine = torch.nonzero(call == targets).flatten()  # slices that make the call being explained
            short = None
            if self.refine_steps and len(mine):
                logits[mine] = refine(model, x[mine], f[mine], logits[mine], targets[mine], self.refine_steps, cancel,
                                      head[mine])
                short = short_of_call(model, x, logits, targets, call, head)
                more = torch.nonzero(short).flatten()
                if len(more):  # the region still does not keep the call: optimise those slices further
                    logits[more] = refine(model, x[more], f[more], logits[more], targets[more], REFINE_MORE, cancel,
                                          head[more])
                    short[more] = short_of_call(model, x[more], logits[more], targets[more], call[more], head[more])
            logits = sufficient(model, x, logits, targets, call, head, short)
            out[b] = upsampled(logits, slices.shape[-1])[:, 0].numpy()
            if progress is not None:
                progress(b.stop / len(slices))
        return out


METHODS = {"mincam": MinimalEvidence(), "mincam-opt": MinimalEvidence("mincam-opt", TITLES["mincam-opt"],
                                                                      refine_steps=REFINE_STEPS)}
METHOD = METHODS["mincam"]
