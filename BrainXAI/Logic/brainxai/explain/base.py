"""Shared machinery for CAM methods: pytorch-grad-cam does the maths; this runs it over slice batches.

All methods here weight the channels of the features the classification head pools. Those features come from
the model stage's own forward pass when the pipeline has them (one forward pass shared by the prediction and
every method), else from one batched forward pass here. Gradient methods then run on the head alone
(model.HeadView); Score-CAM still needs its masked forward passes through the network.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from pytorch_grad_cam.utils.image import scale_cam_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from .. import progress as progress_mod
from ..progress import Cancel, Fraction
from ..model import DEEPEST, LoadedModel, as_batch, head_features, precision_mode


def to_slice_size(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """What BaseCAM does after get_cam_image: scale each map to [0, 1] and resize it to the input (per target
    layer), then scale the aggregate again. Maps made on the features' grid get here the same treatment."""
    return scale_cam_image(scale_cam_image(np.maximum(maps, 0), size))


@dataclass(frozen=True)
class CamMethod:
    name: str  # the id used on the CLI and in findings
    title: str  # the name a reader knows
    cam_class: type
    batch_size: int = 32  # slices per call
    options: dict = field(default_factory=dict)  # attributes set on the pytorch-grad-cam object
    uses_gradients: bool = True
    level: float | None = None  # maps are min-max scaled per slice: masks are cut at a percentile, not a level

    def __call__(
        self,
        model: LoadedModel,
        slices: np.ndarray,
        target: int,
        progress: Fraction | None = None,
        cancel: Cancel | None = None,
        features: np.ndarray | None = None,
        precision: str = "fp32",
    ) -> np.ndarray:
        """slices (N, S, S) in [0, 1] -> heatmaps (N, S, S) in [0, 1], one min-max-scaled map per slice
        for class index `target`. `features`: the head's input for these slices from predict_slices(keep_features);
        `precision` (see model.precision_mode) applies to any forward pass run here; `progress` is told the fraction of
        the slices done after each batch."""
        if model.cfg.cam_layer != DEEPEST:  # another target layer: pytorch-grad-cam's own forward and backward
            return self._on_network(model, slices, target, progress, cancel)
        if features is None:
            features = head_features(model, slices, precision=precision)
        out = np.zeros(slices.shape, np.float32)
        # Gradient methods run no network at all here; Score-CAM's masked passes run at the requested precision.
        with precision_mode(model, "fp32" if self.uses_gradients else precision) as (net, prepare):
            if self.uses_gradients:
                view = model.head_view()
                cam, layer = self.cam_class(model=view, target_layers=[view.features]), None
            else:
                view = model.classifier(net)
                layer = view.target_layer()
                cam = self.cam_class(model=view, target_layers=[layer])
            for key, value in self.options.items():
                setattr(cam, key, value)
            with cam:
                for b in self._batches(len(slices), progress, cancel):
                    f = torch.from_numpy(features[b])
                    targets = [ClassifierOutputTarget(target)] * len(f)
                    if self.uses_gradients:
                        maps = cam(input_tensor=f, targets=targets)
                    else:  # the activations are known: straight to the channel weights and the weighted sum
                        maps = cam.get_cam_image(prepare(as_batch(slices[b])), layer, targets, f.numpy(), None)
                    out[b] = to_slice_size(maps, slices.shape[:0:-1])
        return out

    def _batches(self, n: int, progress, cancel):
        """Slices of batch_size indices; cancel is checked before each, the fraction done told after each."""
        for start in range(0, n, self.batch_size):
            progress_mod.check(cancel)
            b = slice(start, min(start + self.batch_size, n))
            yield b
            if progress is not None:
                progress(b.stop / n)

    def _on_network(self, model, slices, target, progress, cancel) -> np.ndarray:
        out = np.zeros(slices.shape, np.float32)
        view = model.classifier()
        with self.cam_class(model=view, target_layers=[view.target_layer(model.cfg.cam_layer)]) as cam:
            for key, value in self.options.items():
                setattr(cam, key, value)
            for b in self._batches(len(slices), progress, cancel):
                x = as_batch(slices[b])
                out[b] = cam(input_tensor=x, targets=[ClassifierOutputTarget(target)] * len(x))
        return out
