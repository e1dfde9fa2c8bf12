"""Explain stage: one small module per method over a shared base (explain/base.py).

A method's module (and with it pytorch-grad-cam, torchvision and scikit-learn: seconds to import) is loaded only
when the method is used, so method names can be checked, and the command line built, without them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ..errors import BrainXAIError

if TYPE_CHECKING:
    from .base import CamMethod

_MODULES = {"gradcam": "gradcam", "gradcam++": "gradcampp", "scorecam": "scorecam", "mincam": "mincam",
            "mincam-opt": "mincam", "proto-early": "prototype", "proto-middle": "prototype", "proto-late": "prototype"}
METHODS: tuple[str, ...] = tuple(_MODULES)  # the ids used on the command line and in findings
CAMS = ("gradcam", "gradcam++", "scorecam")  # the class-activation maps (the default set)
TITLES = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "scorecam": "Score-CAM",  # the names a reader knows
          "mincam": "Minimal evidence", "mincam-opt": "Minimal evidence (optimised)",
          # early / middle / late: the encoder's outputs at 1/8, 1/16 and 1/32 of the slice (explain.prototype.DEPTHS)
          "proto-early": "Prototype similarity, early layer", "proto-middle": "Prototype similarity, middle layer",
          "proto-late": "Prototype similarity, late layer"}


def check_names(names) -> list[str]:
    """The method ids, lower-cased; a one-line error for an unknown one."""
    out = []
    for name in names:
        if name.lower() not in _MODULES:
            raise BrainXAIError(f"unknown explanation method '{name}': choose from {', '.join(METHODS)}")
        out.append(name.lower())
    return out


def get_method(name: str) -> CamMethod:
    (name,) = check_names([name])
    module = importlib.import_module(f".{_MODULES[name]}", __name__)
    return module.METHODS[name] if hasattr(module, "METHODS") else module.METHOD
