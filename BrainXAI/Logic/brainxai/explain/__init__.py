"""Explain stage: one small module per method over a shared base (explain/base.py)."""

from ..errors import BrainXAIError
from . import gradcam, gradcampp, scorecam
from .base import CamMethod

METHODS: dict[str, CamMethod] = {m.METHOD.name: m.METHOD for m in (gradcam, gradcampp, scorecam)}


def get_method(name: str) -> CamMethod:
    try:
        return METHODS[name.lower()]
    except KeyError:
        raise BrainXAIError(f"unknown explanation method '{name}': choose from {', '.join(METHODS)}") from None
