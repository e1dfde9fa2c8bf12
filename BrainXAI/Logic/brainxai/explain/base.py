"""Shared machinery for CAM methods: pytorch-grad-cam does the maths; this runs it over slice batches."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from ..errors import BrainXAIError
from ..model import LoadedModel


@dataclass(frozen=True)
class CamMethod:
    name: str  # the id used on the CLI and in findings
    title: str  # the name a reader knows
    cam_class: type
    batch_size: int = 8
    options: dict = field(default_factory=dict)  # attributes set on the pytorch-grad-cam object

    def __call__(
        self,
        model: LoadedModel,
        slices: np.ndarray,
        target: int,
        progress: Callable[[int], None] | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> np.ndarray:
        """slices (N, S, S) in [0, 1] -> heatmaps (N, S, S) in [0, 1], one min-max-scaled map per slice
        for class index `target`."""
        out = np.zeros(slices.shape, np.float32)
        view = model.classifier()
        with self.cam_class(model=view, target_layers=[view.target_layer(model.cfg.cam_layer)]) as cam:
            for key, value in self.options.items():
                setattr(cam, key, value)
            for start in range(0, len(slices), self.batch_size):
                if cancel is not None and cancel():
                    raise BrainXAIError("cancelled")
                x = torch.from_numpy(np.ascontiguousarray(slices[start : start + self.batch_size, None], np.float32))
                targets = [ClassifierOutputTarget(target)] * len(x)
                # pytorch-grad-cam prints its own per-image tqdm bars for some methods; ours is the one users see.
                with contextlib.redirect_stderr(io.StringIO()):
                    out[start : start + len(x)] = cam(input_tensor=x, targets=targets)
                if progress is not None:
                    progress(len(x))
        return out
