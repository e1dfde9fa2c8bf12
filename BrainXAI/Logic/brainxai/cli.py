"""Command line: `brainxai explain` (the pipeline) and `brainxai train` (the default model)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import BrainXAIError


def _explain(args) -> int:
    from tqdm import tqdm

    from .pipeline import Options, explain

    if args.input is not None and args.demo:
        raise BrainXAIError("give either an INPUT or --demo, not both")
    bars = []  # created on the first report, so an input error stays a single line

    def progress(stage: str, fraction: float):
        if not bars:
            bars.append(tqdm(total=100, unit="%", bar_format="{desc:<12} {bar} {n:.0f}% [{elapsed}<{remaining}]"))
        bars[0].set_description_str(stage)
        bars[0].update(round(fraction * 100, 1) - bars[0].n)

    opts = Options(
        methods=tuple(m.strip() for m in args.methods.split(",") if m.strip()),
        threshold_percentile=args.threshold,
        model_path=args.model,
        max_cam_slices=args.max_cam_slices,
    )
    try:
        result = explain(args.input, args.out, opts, overwrite=args.overwrite, progress=progress)
    finally:
        for bar in bars:
            bar.close()
    f = result.findings
    d = f["diagnosis"]
    print(f"{'PHANTOM - ' if f['input']['phantom'] else ''}diagnosis: {d['label']} "
          f"(p={d['probabilities'][d['label']]:.2f}); lesion {f['lesion']['volume_ml']} mL; outputs in {Path(args.out).resolve()}")
    return 0


def _train(args) -> int:
    from .model import ModelConfig
    from .train import train

    card = train(args.data, args.out, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                 cfg=ModelConfig(encoder=args.encoder, input_size=args.size), cache=args.cache)
    v = card["validation"]
    print(f"validation accuracy {v['accuracy']:.3f}, tumour Dice {v['tumour_dice_mean']:.3f}; weights {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .explain import METHODS
    from .model import DEFAULT_WEIGHTS

    p = argparse.ArgumentParser(prog="brainxai", description="Explainable brain-tumour MRI (research use only).")
    p.add_argument("--version", action="version", version=f"brainxai {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    e = sub.add_parser("explain", help="classify, segment, explain and localise one scan")
    e.add_argument("input", nargs="?", type=Path,
                   help="3D volume (NIfTI/NRRD/MHA), DICOM series folder, or 2D PNG/JPEG; omit for the bundled phantom")
    e.add_argument("--demo", action="store_true", help="run on the bundled synthetic phantom")
    e.add_argument("--out", type=Path, required=True, help="output folder (must be empty or absent)")
    e.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    e.add_argument("--methods", default="gradcam,gradcam++,scorecam", help=f"comma-separated, from: {', '.join(METHODS)}")
    e.add_argument("--threshold", type=float, default=90.0, help="heatmap percentile (in-brain) for the masks")
    e.add_argument("--model", type=Path, help="weights file (default: the packaged model)")
    e.add_argument("--max-cam-slices", type=int, help="explain at most this many slices (those with most tumour)")
    e.set_defaults(func=_explain)

    t = sub.add_parser("train", help="train the default dual-head model on the shared data (CPU)")
    t.add_argument("--data", type=Path, default=Path("../shared/data"), help="folder with figshare/ and br35h_no_tumor/")
    t.add_argument("--out", type=Path, default=Path("runs/default") / DEFAULT_WEIGHTS)
    t.add_argument("--epochs", type=int, default=14)
    t.add_argument("--batch-size", type=int, default=16)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--encoder", default="resnet18")
    t.add_argument("--size", type=int, default=192)
    t.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "brainxai")
    t.set_defaults(func=_train)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BrainXAIError as exc:
        print(f"brainxai: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("brainxai: cancelled; nothing was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
