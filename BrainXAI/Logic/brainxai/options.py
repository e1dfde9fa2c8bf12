"""What a run is asked to do: one `Options` for the command line, the background process and the Slicer logic."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .threshold import DEFAULT_PERCENTILE

DEFAULT_METHODS = ("gradcam", "gradcam++", "scorecam")


@dataclass
class Options:
    methods: tuple[str, ...] = DEFAULT_METHODS
    threshold_percentile: float = DEFAULT_PERCENTILE
    model_path: Path | None = None
    batch_size: int = 4  # measured on 2 cores: small batches keep activations in cache (docs/bench.md)
    max_cam_slices: int | None = None  # None: every slice with tumour evidence
    precision: str = "fast"  # model and Score-CAM passes: "fast" (bf16 where the CPU has it natively) or "fp32"
