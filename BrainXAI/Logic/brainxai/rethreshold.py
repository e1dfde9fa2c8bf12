"""Re-threshold a written result: threshold -> findings -> report again on `brainxai explain`'s folder.

No model and no torch: the Slicer panel's threshold slider calls this in the GUI process.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .reporting import findings as findings_mod, report
from . import layout, output, threshold
from .mni import register
from .errors import BrainXAIError

# Written into the staging folder once every new file is there: from then on an interrupted rethreshold is finished
# by the next call (roll forward), before that it never touched the folder (roll back = delete the staging).
_JOURNAL = "commit.json"


def _commit(staging: Path, out: Path) -> None:
    plan = json.loads((staging / _JOURNAL).read_text(encoding="utf-8"))
    for name in plan["remove"]:
        (out / name).unlink(missing_ok=True)
    for source, target in plan["moves"]:  # findings and report last: a reader never sees them ahead of the masks
        if (staging / source).exists():
            os.replace(staging / source, out / target)
    shutil.rmtree(staging, ignore_errors=True)


def finish_interrupted(out_dir: str | Path) -> None:
    """Complete (or drop) what an interrupted rethreshold of OUT left, so masks, findings and report agree."""
    for staging in sorted(Path(out_dir).glob(".rethreshold.*")):
        if (staging / _JOURNAL).is_file():
            _commit(staging, Path(out_dir))
        else:
            shutil.rmtree(staging, ignore_errors=True)

def rethreshold(out_dir: str | Path, method: str, percentile: float) -> tuple[np.ndarray, dict]:
    """Threshold a written result's heatmap at another percentile, without re-running the model.

    The pipeline's own thresholding on the saved heatmap and analysis region (so the original percentile gives
    back exactly the original mask). The method's mask (native and MNI), its entry in findings.json and the
    report are rewritten in `out_dir`, each file replaced whole, and an LLM report written for the old threshold
    is removed; overview.png keeps the original threshold.
    Returns (mask as a (k, j, i) array on the input grid, updated findings)."""
    with output.claim(out_dir) as out:  # not while an explain or another rethreshold writes the same folder
        finish_interrupted(out)
        return _rethreshold(out, method, percentile)


def _rethreshold(out: Path, method: str, percentile: float) -> tuple[np.ndarray, dict]:
    result_findings = findings_mod.read_findings(out / layout.FINDINGS)
    entry = next((e for e in result_findings["explanations"] if e["method"] == method), None)
    if entry is None:
        done = ", ".join(e["method"] for e in result_findings["explanations"]) or "none"
        raise BrainXAIError(f"no '{method}' explanation in {out}: choose one of {done}")
    paths = {name: out / layout.image(name) for name in (layout.heatmap(method), layout.ANALYSIS_REGION, layout.SEGMENTATION)}
    missing = [p.name for p in paths.values() if not p.is_file()]
    if missing:
        raise BrainXAIError(f"{out} lacks {', '.join(missing)}: re-run 'brainxai explain' to get a complete folder")
    heat = sitk.ReadImage(str(paths[layout.heatmap(method)]), sitk.sitkFloat32)
    region = sitk.GetArrayFromImage(sitk.ReadImage(str(paths[layout.ANALYSIS_REGION]))) > 0
    seg_mask = sitk.GetArrayFromImage(sitk.ReadImage(str(paths[layout.SEGMENTATION]))) > 0
    # Percentiles and 26-connected components do not depend on axis order, so the file's grid gives the
    # pipeline's mask although the pipeline thresholded in the model's orientation.
    mask, _ = threshold.threshold_heatmap(sitk.GetArrayFromImage(heat), region, heat.GetSpacing(), percentile)
    entry["threshold_percentile"] = float(percentile)
    entry.pop("threshold_level", None)  # a probability map re-thresholded by percentile is cut like the others now
    entry.update(threshold.mask_stats(mask, seg_mask, float(np.prod(heat.GetSpacing())) / 1000.0))
    findings_mod.validate(result_findings)

    mask_image = sitk.GetImageFromArray(mask.astype(np.uint8))
    mask_image.CopyInformation(heat)
    staged = tempfile.mkdtemp(prefix=".rethreshold.", dir=out)
    try:
        staging = Path(staged)
        moves = [(layout.image(layout.mask(method)), layout.image(layout.mask(method)))]
        sitk.WriteImage(mask_image, str(staging / moves[0][0]), useCompression=True)
        tfm = out / layout.TRANSFORM
        if (out / layout.MNI_DIR / layout.image(layout.mask(method))).is_file() and tfm.is_file():
            moves.append(("mni_mask.nii.gz", f"{layout.MNI_DIR}/{layout.image(layout.mask(method))}"))
            sitk.WriteImage(register.resample_to_mni(mask_image, register.load_transform(tfm), "nearest"),
                            str(staging / "mni_mask.nii.gz"), useCompression=True)
        findings_mod.write_findings(result_findings, staging / layout.FINDINGS)
        report.write_report(result_findings, staging)
        moves += [(name, name) for name in (layout.REPORT_MD, layout.REPORT_HTML, layout.FINDINGS)]
        # an LLM report written for the old threshold no longer says what the findings say
        plan = {"moves": moves, "remove": sorted(p.name for p in out.glob(layout.llm_reports()))}
        (staging / f"{_JOURNAL}.tmp").write_text(json.dumps(plan), encoding="utf-8")
        os.replace(staging / f"{_JOURNAL}.tmp", staging / _JOURNAL)
        _commit(staging, out)
    except BaseException as exc:
        if not (Path(staged) / _JOURNAL).is_file():  # not yet committed: the folder is as it was
            shutil.rmtree(staged, ignore_errors=True)
        if isinstance(exc, (OSError, RuntimeError)):
            raise output.write_error(exc, out) from exc
        raise
    return mask, result_findings
