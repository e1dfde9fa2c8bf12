"""What a run is asked to do: one `Options` for the command line, the background process and the Slicer logic."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .explain import CAMS

DEFAULT_METHODS = CAMS  # the class-activation maps; the others are asked for by name
DEFAULT_PERCENTILE = 90.0  # heatmap percentile, inside the analysed brain, above which a voxel is in the CAM mask


@dataclass
class Options:
    methods: tuple[str, ...] = DEFAULT_METHODS
    threshold_percentile: float = DEFAULT_PERCENTILE
    model_path: Path | None = None
    batch_size: int = 4  # measured on 2 cores: small batches keep activations in cache (docs/bench.md)
    max_cam_slices: int | None = None  # None: every slice with tumour evidence
    precision: str = "fast"  # model and Score-CAM passes: "fast" (bf16 where the CPU has it natively) or "fp32"
    enhance: bool = False  # percentile stretch + CLAHE on each slice's heatmap (explain.enhance), before thresholding


def to_argv(options: Options) -> list[str]:
    """The `brainxai explain` arguments that ask for OPTIONS (what differs from the defaults): how the Slicer module's
    background process is given them."""
    default, argv = Options(), []
    if options.methods != default.methods:
        argv += ["--methods", ",".join(options.methods)]
    if options.threshold_percentile != default.threshold_percentile:
        argv += ["--threshold", repr(float(options.threshold_percentile))]
    if options.max_cam_slices is not None:
        argv += ["--max-cam-slices", str(options.max_cam_slices)]
    if options.model_path is not None:
        argv += ["--model", str(options.model_path)]
    if options.enhance:
        argv += ["--enhance"]
    return argv


def from_args(args) -> Options:
    """The Options of a parsed `brainxai explain` command line (the inverse of to_argv)."""
    return Options(methods=tuple(m.strip() for m in args.methods.split(",") if m.strip()),
                   threshold_percentile=args.threshold, model_path=args.model, max_cam_slices=args.max_cam_slices,
                   enhance=args.enhance)
