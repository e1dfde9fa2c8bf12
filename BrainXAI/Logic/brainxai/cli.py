"""Command line: `brainxai explain` (the pipeline), `report` / `verify` (LLM reports and their grounding check),
`train`, `evaluate` and the comparisons."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from .errors import BrainXAIError


def _explain(args) -> int:
    from tqdm import tqdm

    from .pipeline import Options, explain

    if args.input is not None and args.demo:
        raise BrainXAIError("give either an INPUT or --demo, not both")
    bars = []  # created on the first report, so an input error stays a single line

    def progress(stage: str, fraction: float):
        if args.progress == "json":  # for a parent process (the Slicer module): one JSON line per report
            from .process import progress_line

            print(progress_line(stage, fraction), flush=True)
            return
        if not bars:
            bars.append(tqdm(total=100, unit="%", bar_format="{desc:<12} {bar} {n:.0f}% [{elapsed}<{remaining}]"))
        bars[0].set_description_str(stage)
        bars[0].update(round(fraction * 100, 1) - bars[0].n)

    backend = _backend(args)  # an unknown backend or a refused cloud endpoint is said before minutes of analysis
    if backend is not None:
        from .llm import check_allowed

        check_allowed(backend)
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
    if args.llm:
        _write_llm_report(f, backend, Path(args.out))
    return 0


def _backend(args):
    from .llm import load_backend

    if args.llm in (None, "builtin"):
        return None
    return load_backend(args.llm, args.llm_config, allow_cloud=True if args.allow_cloud else None)


def _write_llm_report(findings: dict, backend, out_dir: Path) -> None:
    from . import llm_report

    outcome = llm_report.generate(findings, backend)
    md, _, _ = llm_report.write(outcome, out_dir)
    if outcome.banner:
        print(f"brainxai: {outcome.banner}", file=sys.stderr)
    print(f"report ({'LLM, verified' if outcome.source == 'llm' else 'built-in'}): {md}")


def _report(args) -> int:
    from .findings import read_findings

    findings = read_findings(args.findings)
    _write_llm_report(findings, _backend(args), args.out or args.findings.parent)
    return 0


def _compare_llms(args) -> int:
    from tqdm import tqdm

    from .compare_llms import compare, write

    if args.out.exists() and not args.overwrite:
        raise BrainXAIError(f"{args.out} exists: choose another --out or pass --overwrite")
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    with tqdm(total=len(backends) * len(args.findings), unit="report") as bar:
        rows = compare(args.findings, backends, args.llm_config, args.allow_cloud, progress=lambda: bar.update(1))
    command = "brainxai compare-llms " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["compare-llms"] else \
        "brainxai compare-llms"
    write(rows, args.out, command)
    print(args.out.read_text(encoding="utf-8"))
    return 0


def _bench(args) -> int:
    import json

    from .bench import render, run

    if args.out.exists() and not args.overwrite:
        raise BrainXAIError(f"{args.out} exists: choose another --out or pass --overwrite")
    if not args.input.is_file():
        raise BrainXAIError(f"benchmark input {args.input} not found: give --input (e.g. the shared BraTS volume)")
    results = run(args.input, args.scorecam_slices, progress=lambda text: print(f"bench: {text}", file=sys.stderr))
    command = "brainxai bench " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["bench"] else "brainxai bench"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(results, command), encoding="utf-8")
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(args.out.read_text(encoding="utf-8"))
    return 0


def _verify(args) -> int:
    from .findings import read_findings
    from .verify import verify

    findings = read_findings(args.findings)
    try:
        text = args.report.read_text(encoding="utf-8")
    except (FileNotFoundError, UnicodeDecodeError) as exc:
        raise BrainXAIError(f"cannot read report {args.report}: {exc}") from None
    result = verify(findings, text)
    for claim in result.unsupported:
        print(claim.line())
    print(f"{len(result.claims)} claims, {len(result.unsupported)} unsupported", file=sys.stderr)
    return 0 if result.ok else 1


def _train(args) -> int:
    from .model import ModelConfig, encoder_name
    from .train import train

    encoder = encoder_name(args.backbone)
    cam_layer = args.cam_layer
    card = train(args.data, args.out, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                 cfg=ModelConfig(encoder=encoder, input_size=args.size, cam_layer=cam_layer), cache=args.cache,
                 pretrained=not args.no_pretrained, templates=args.templates)
    v = card["validation"]
    print(f"validation accuracy {v['accuracy']:.3f}, tumour Dice {v['tumour_dice_mean']:.3f}; weights {args.out}")
    return 0


def _evaluate(args) -> int:
    from .evaluate import EvalOptions, evaluate, write_metrics
    from .model import load_model

    out = Path(args.out)
    if out.exists() and not args.overwrite:  # refuse before spending minutes on the work
        raise BrainXAIError(f"{out} exists: choose another --out or pass --overwrite")
    options = EvalOptions(methods=tuple(m.strip() for m in args.methods.split(",") if m.strip()), split=args.split,
                          threshold_percentile=args.threshold, scorecam_slices=args.scorecam_slices,
                          perturbation_slices=args.perturbation_slices, max_cam_slices=args.max_cam_slices,
                          style_slices=args.style_slices)
    bars: dict = {}

    def progress(stage: str, done: int, total: int) -> None:
        from tqdm import tqdm

        bar = bars.get(stage)
        if bar is None:
            for other in bars.values():
                other.close()
            bar = bars[stage] = tqdm(total=total, desc=stage, unit="slice")
        bar.update(done - bar.n)

    metrics = evaluate(load_model(args.model), args.data, args.no_tumor, options, cache=args.cache, progress=progress,
                       healthy_volumes=args.healthy_volume or [])
    for bar in bars.values():
        bar.close()
    paths = write_metrics(metrics, out, args.overwrite)
    print(Path(paths[1]).read_text(encoding="utf-8"))
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def _views(args) -> int:
    from . import scene, slice_views

    mrml, app = scene.headless_scene()
    volume = scene.read_volume(mrml, args.input, args.input.name.split(".")[0]) if args.input else None
    result = scene.load_results(mrml, args.folder, volume)
    method = args.method or next(iter(result.heatmaps))
    slice_views.render(mrml, app, result, method, args.png, size=args.size)
    print(f"wrote {args.png}")
    return 0


def _compare(args) -> int:
    from .backbones import compare, write

    names = [b.strip() for b in args.backbones.split(",")] if args.backbones else None
    command = f"brainxai compare-backbones --epochs {args.epochs} --size {args.size}" + (
        f" --backbones {args.backbones}" if args.backbones else "")
    rows = []
    for row in compare(args.data, args.work, names, epochs=args.epochs, size=args.size, cache=args.cache):
        rows.append(row)
        write(rows, args.out, args.epochs, args.size, command)
    print(Path(args.out).read_text(encoding="utf-8"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .explain import METHODS
    from .model import DEEPEST, DEFAULT_WEIGHTS, PAPER_BACKBONES

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
    e.add_argument("--progress", choices=("bar", "json"), default="bar",
                   help="'json': machine-readable progress lines on stdout (for a parent process)")
    _llm_options(e)
    e.set_defaults(func=_explain)

    r = sub.add_parser("report", help="write a radiology-style report from findings.json with an LLM, verified")
    r.add_argument("findings", type=Path, help="findings.json written by 'brainxai explain'")
    r.add_argument("--out", type=Path, help="folder for report_llm.md/.html/.json (default: beside the findings)")
    _llm_options(r, required=True)
    r.set_defaults(func=_report)

    k = sub.add_parser("verify", help="check every claim of a report against its findings (exit 1 if any fails)")
    k.add_argument("findings", type=Path)
    k.add_argument("report", type=Path, help="the report (Markdown or plain text)")
    k.set_defaults(func=_verify)

    b = sub.add_parser("bench", help="ours vs a naive per-slice pytorch-grad-cam baseline, side by side")
    b.add_argument("--input", type=Path, default=Path("../shared/data/volumes/brats/BraTS-GLI-00001-000-t1c.nii.gz"))
    b.add_argument("--out", type=Path, default=Path("docs/bench.md"), help="Markdown table (JSON beside it)")
    b.add_argument("--overwrite", action="store_true")
    b.add_argument("--scorecam-slices", type=int, default=3, help="evidence slices for the Score-CAM comparison")
    b.set_defaults(func=_bench)

    m = sub.add_parser("compare-llms", help="the paper's report comparison: text metrics and grounding per backend")
    m.add_argument("findings", type=Path, nargs="+", help="findings.json files")
    m.add_argument("--backends", default="builtin,llama", help="comma-separated backend names ('builtin' included)")
    m.add_argument("--out", type=Path, default=Path("docs/llm_comparison.md"), help="Markdown table (JSON beside)")
    m.add_argument("--overwrite", action="store_true")
    m.add_argument("--llm-config", type=Path)
    m.add_argument("--allow-cloud", action="store_true")
    m.set_defaults(func=_compare_llms)

    v = sub.add_parser("evaluate", help="diagnostic, segmentation and explanation metrics on a labelled folder")
    v.add_argument("--data", type=Path, help="folder in the figshare layout (labels.csv, images/, masks/)")
    v.add_argument("--no-tumor", type=Path, help="folder of tumour-free images (PNG/JPEG named by integer index)")
    v.add_argument("--out", type=Path, required=True, help="metrics JSON to write (.md and .png plots go beside it)")
    v.add_argument("--overwrite", action="store_true", help="replace existing metric files")
    v.add_argument("--model", type=Path, help="weights file (default: the packaged model)")
    v.add_argument("--split", choices=("all", "val"), default="all",
                   help="'val': only the validation blocks of the training split (the default model's held-out data)")
    v.add_argument("--methods", default="gradcam,gradcam++,scorecam", help=f"comma-separated, from: {', '.join(METHODS)}")
    v.add_argument("--threshold", type=float, default=90.0, help="heatmap percentile (in-head) for the CAM masks")
    v.add_argument("--scorecam-slices", type=int, default=24, help="Score-CAM on a random subset of this many slices")
    v.add_argument("--perturbation-slices", type=int, default=200, help="deletion/insertion on this many slices")
    v.add_argument("--max-cam-slices", type=int, help="Grad-CAM(++) on at most this many slices (default: all)")
    v.add_argument("--style-slices", type=int, default=500, help="shortcut check on a random subset of this many")
    v.add_argument("--healthy-volume", type=Path, action="append",
                   help="a tumour-free 3D head (repeatable): share of its brain slices called no_tumor")
    v.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "brainxai")
    v.set_defaults(func=_evaluate)

    s = sub.add_parser("views", help="render axial/sagittal/coronal slice views of an explain folder (slicer-core)")
    s.add_argument("folder", type=Path, help="a folder written by 'brainxai explain'")
    s.add_argument("--png", type=Path, required=True, help="PNG to write (never overwritten)")
    s.add_argument("--input", type=Path, help="the scan the folder was computed from (background of the views)")
    s.add_argument("--method", help="which heatmap to overlay (default: the first in the folder)")
    s.add_argument("--size", type=int, default=360, help="pixels per view")
    s.set_defaults(func=_views)

    c = sub.add_parser("compare-backbones", help="equal-budget training + evaluation of the paper's backbones")
    c.add_argument("--data", type=Path, default=Path("../shared/data"), help="folder with figshare/ and br35h_no_tumor/")
    c.add_argument("--out", type=Path, default=Path("docs/backbones.md"), help="Markdown table (JSON beside it)")
    c.add_argument("--work", type=Path, default=Path("runs/backbones"), help="where the trained weights go")
    c.add_argument("--backbones", help=f"comma-separated (default: all of {', '.join(PAPER_BACKBONES)})")
    c.add_argument("--epochs", type=int, default=2)
    c.add_argument("--size", type=int, default=128)
    c.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "brainxai")
    c.set_defaults(func=_compare)

    t = sub.add_parser("train", help="train the default dual-head model on the shared data (CPU)")
    t.add_argument("--data", type=Path, default=Path("../shared/data"), help="folder with figshare/ and br35h_no_tumor/")
    t.add_argument("--out", type=Path, default=Path("runs/default") / DEFAULT_WEIGHTS)
    t.add_argument("--epochs", type=int, default=22)
    t.add_argument("--batch-size", type=int, default=16)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--backbone", "--encoder", default="resnet18",
                   help=f"a paper backbone ({', '.join(PAPER_BACKBONES)}) or any segmentation-models-pytorch encoder")
    t.add_argument("--cam-layer", default=DEEPEST,
                   help="CAM target: 'deepest' (the features the classification head pools) or a dotted module path")
    t.add_argument("--no-pretrained", action="store_true",
                   help="train from scratch even if ImageNet weights for the backbone are in the local cache")
    t.add_argument("--templates", action="store_true",
                   help="add healthy MNI152/ICBM152 template slices (no_tumor, packaged) to training "
                        "(measured: did not fix the healthy IXI call, see README)")
    t.add_argument("--size", type=int, default=224)
    t.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "brainxai")
    t.set_defaults(func=_train)
    return p


def _llm_options(parser, required: bool = False) -> None:
    from .llm import PRESETS

    names = ", ".join(["builtin", *PRESETS])
    parser.add_argument("--llm", "--backend", dest="llm", required=required,
                        help=f"report writer: {names}, or a backend defined in the config file")
    parser.add_argument("--llm-config", type=Path, help="TOML file with [backends.NAME] tables "
                                                        "(default: $BRAINXAI_LLM_CONFIG or ~/.config/brainxai/llm.toml)")
    parser.add_argument("--allow-cloud", action="store_true",
                        help="opt in to sending the de-identified findings to an endpoint off this machine")


def _terminate(signum, frame):  # a parent's cancel (SIGTERM) unwinds like Ctrl-C: temporary output is removed
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):  # an ASCII locale must not turn a report's "–" into a crash
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    args = build_parser().parse_args(argv)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main_thread else None
    try:
        return args.func(args)
    except BrainXAIError as exc:
        print(f"brainxai: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("brainxai: cancelled; nothing was written", file=sys.stderr)
        return 130
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
