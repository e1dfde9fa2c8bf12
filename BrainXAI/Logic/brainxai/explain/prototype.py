"""Prototype similarity maps: gradient-free, layer by layer (early -> late encoder depths).

For each depth, prototypes are cluster centres (k-means on unit-length feature vectors) of the encoder's features
on training slices: per tumour class at the tumour's locations, and for normal tissue at tumour-free head locations.
A slice's map for a tumour class is, at each location, how much closer its features are to that class's nearest
prototype than to normal tissue's (cosine similarity); for "no tumour", closer to normal tissue than to any tumour.
No gradient and no class score is involved: the map shows what the encoder's representation at that depth
resembles, which is why early depths show texture and intensity and late ones the lesion as a whole.

The prototypes lie beside the weights they were fitted on (PROTOTYPES, with their sha256);
`brainxai fit-explainers` (run by `brainxai train`) rebuilds them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import TITLES
from .. import CLASSES
from .. import progress as progress_mod
from ..errors import BrainXAIError
from ..model import LoadedModel, as_batch, precision_mode
from .base import to_slice_size

PROTOTYPES = "prototypes.npz"
DEPTHS = {"proto-early": 3, "proto-middle": 4, "proto-late": 5}  # method id -> encoder output (1/8, 1/16, 1/32)
NORMAL = "normal"  # normal tissue's prototypes, beside the tumour classes'
TUMOUR = "tumour"  # every tumour class's locations together


def prototypes_path(weights: Path) -> Path:
    return Path(weights).with_name(PROTOTYPES)


@lru_cache(maxsize=2)
def _load(path: str, sha256: str) -> dict[str, np.ndarray]:
    p = Path(path)
    if not p.is_file():
        raise BrainXAIError(f"no prototypes beside the model weights ({p.name} in {p.parent}): run "
                            "'brainxai fit-explainers --weights WEIGHTS', or choose another method")
    with np.load(p) as z:
        stored = {k: z[k] for k in z.files}
    if str(stored["weights_sha256"]) != sha256:
        raise BrainXAIError(f"{p.name} was fitted on other model weights (sha256 {str(stored['weights_sha256'])[:12]}, "
                            f"loaded {sha256[:12]}): run 'brainxai fit-explainers --weights WEIGHTS'")
    return stored


def load_prototypes(model: LoadedModel) -> dict[str, np.ndarray]:
    """'{depth}/{class}' -> (k, channels) unit vectors, for every depth and class (NORMAL, TUMOUR, tumour classes)."""
    if model.path is None:
        raise BrainXAIError("prototype maps need a model loaded from a weights file")
    return _load(str(prototypes_path(model.path)), model.sha256)


_last: dict = {}  # the encoder's outputs for the last slices seen: the three depths share one forward pass


def encoder_features(model: LoadedModel, slices: np.ndarray, precision: str = "fp32", batch_size: int = 16,
                     cancel=None) -> list[np.ndarray]:
    """Every encoder output (float32) for `slices` (N, S, S); repeated calls on the same slices reuse the last pass."""
    key = (model.sha256, precision, slices.shape, hashlib.blake2b(np.ascontiguousarray(slices)).hexdigest())
    if _last.get("key") != key:
        outs: list[list[np.ndarray]] = []
        with torch.no_grad(), precision_mode(model, precision) as (net, prepare):
            for start in range(0, len(slices), batch_size):
                progress_mod.check(cancel)
                feats = net.encoder(prepare(as_batch(slices[start : start + batch_size])))
                outs.append([f.float().numpy() for f in feats])
        _last.clear()
        _last.update(key=key, features=[np.concatenate(level) for level in zip(*outs)] if outs else [])
    return _last["features"]


def similarity(features: np.ndarray, prototypes: np.ndarray) -> np.ndarray:
    """(N, C, h, w) features, (k, C) unit prototypes -> (N, h, w) cosine similarity to the nearest prototype."""
    f = torch.from_numpy(features)
    f = F.normalize(f, dim=1)
    return torch.einsum("nchw,kc->nkhw", f, torch.from_numpy(prototypes.astype(np.float32))).amax(1).numpy()


def contrast_map(features: np.ndarray, stored: dict, depth: int, target: str) -> np.ndarray:
    """(N, h, w): similarity to the target's prototypes minus similarity to the opposite (normal tissue for a tumour
    class, any tumour for no tumour)."""
    other = TUMOUR if target == "no_tumor" else NORMAL
    own = NORMAL if target == "no_tumor" else target
    return similarity(features, stored[f"{depth}/{own}"]) - similarity(features, stored[f"{depth}/{other}"])


@dataclass(frozen=True)
class PrototypeSimilarity:
    name: str
    title: str
    depth: int  # index into the encoder's outputs
    level: float | None = None  # cut at the percentile like the CAMs

    def __call__(self, model: LoadedModel, slices: np.ndarray, target: int, progress=None, cancel=None,
                 features: np.ndarray | None = None, precision: str = "fp32") -> np.ndarray:
        """slices (N, S, S) in [0, 1] -> heatmaps (N, S, S) in [0, 1] for class index `target` (CamMethod's
        signature; `features`, the class head's input, are not what this reads)."""
        stored = load_prototypes(model)
        feats = encoder_features(model, slices, precision, cancel=cancel)[self.depth]
        maps = contrast_map(feats, stored, self.depth, CLASSES[target])
        if progress is not None:
            progress(1.0)
        return to_slice_size(maps, slices.shape[:0:-1]).astype(np.float32) if len(slices) else maps


METHODS = {name: PrototypeSimilarity(name, TITLES[name], depth) for name, depth in DEPTHS.items()}
