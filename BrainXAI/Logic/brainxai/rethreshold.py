"""Re-threshold a written result: threshold -> findings -> report again on `brainxai explain`'s folder.

No model and no torch: the Slicer panel's threshold slider calls this in the GUI process.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from . import findings as findings_mod, register, report, threshold
from .errors import BrainXAIError

def rethreshold(out_dir: str | Path, method: str, percentile: float) -> tuple[np.ndarray, dict]:
    """Threshold a written result's heatmap at another percentile, without re-running the model.

    The pipeline's own thresholding on the saved heatmap and analysis region (so the original percentile gives
    back exactly the original mask). The method's mask (native and MNI), its entry in findings.json and the
    report are rewritten in `out_dir`, each file replaced whole, and an LLM report written for the old threshold
    is removed; overview.png keeps the original threshold.
    Returns (mask as a (k, j, i) array on the input grid, updated findings)."""
    out = Path(out_dir)
    result_findings = findings_mod.read_findings(out / "findings.json")
    entry = next((e for e in result_findings["explanations"] if e["method"] == method), None)
    if entry is None:
        done = ", ".join(e["method"] for e in result_findings["explanations"]) or "none"
        raise BrainXAIError(f"no '{method}' explanation in {out}: choose one of {done}")
    paths = {name: out / f"{name}.nii.gz" for name in (f"heatmap_{method}", "analysis_region", "tumor_segmentation")}
    missing = [p.name for p in paths.values() if not p.is_file()]
    if missing:
        raise BrainXAIError(f"{out} lacks {', '.join(missing)}: re-run 'brainxai explain' to get a complete folder")
    heat = sitk.ReadImage(str(paths[f"heatmap_{method}"]), sitk.sitkFloat32)
    region = sitk.GetArrayFromImage(sitk.ReadImage(str(paths["analysis_region"]))) > 0
    seg_mask = sitk.GetArrayFromImage(sitk.ReadImage(str(paths["tumor_segmentation"]))) > 0
    # Percentiles and 26-connected components do not depend on axis order, so the file's grid gives the
    # pipeline's mask although the pipeline thresholded in the model's orientation.
    mask, _ = threshold.threshold_heatmap(sitk.GetArrayFromImage(heat), region, heat.GetSpacing(), percentile)
    entry["threshold_percentile"] = float(percentile)
    entry.update(threshold.mask_stats(mask, seg_mask, float(np.prod(heat.GetSpacing())) / 1000.0))
    findings_mod.validate(result_findings)

    mask_image = sitk.GetImageFromArray(mask.astype(np.uint8))
    mask_image.CopyInformation(heat)
    staged = tempfile.mkdtemp(prefix=".rethreshold.", dir=out)
    try:
        staging = Path(staged)
        writes = {out / f"mask_{method}.nii.gz": staging / f"mask_{method}.nii.gz"}
        sitk.WriteImage(mask_image, str(writes[out / f"mask_{method}.nii.gz"]), useCompression=True)
        mni_mask, tfm = out / "mni" / f"mask_{method}.nii.gz", out / "transform_to_mni.tfm"
        if mni_mask.is_file() and tfm.is_file():
            writes[mni_mask] = staging / "mni_mask.nii.gz"
            sitk.WriteImage(register.resample_to_mni(mask_image, register.load_transform(tfm), "nearest"),
                            str(writes[mni_mask]), useCompression=True)
        findings_mod.write_findings(result_findings, staging / "findings.json")
        report.write_report(result_findings, staging)
        for name in ("findings.json", "report.md", "report.html"):
            writes[out / name] = staging / name
        for target, source in writes.items():  # each file is replaced whole, never left half-written
            os.replace(source, target)
        for stale in out.glob("report_llm.*"):  # written for the old threshold: no longer what the findings say
            stale.unlink()
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return mask, result_findings
