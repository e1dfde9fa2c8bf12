"""The headless pipeline, in the order it runs: load -> preprocess -> register -> model -> explain -> threshold ->
faithfulness -> atlas -> findings -> report (registration comes before the model: the MNI brain it carries back onto
the scan bounds where lesions, slice votes and CAM thresholds may be).

`analyse` works in memory on a SimpleITK image; `write_outputs` puts the result on disk atomically; `explain`
does both for a path. Every output image is on the input's grid (same size, spacing, origin, direction).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import SimpleITK as sitk

from . import CLASSES, __version__, faithfulness, guard, layout, output, preprocess, runtime, threshold
from .mni import atlas, register
from .reporting import findings as findings_mod, report
from .errors import BrainXAIError
from .explain import check_names
from .load import InputInfo, read_input
from .model_config import weights_path
from .options import DEFAULT_METHODS, Options  # noqa: F401 - pipeline.Options is the public spelling
from .progress import Cancel, Progress, Tracker

if TYPE_CHECKING:  # torch is imported on the preload thread, while the main thread registers
    from .model import LoadedModel


LESION_PROBABILITY = 0.5
MIN_LESION_ML = 0.1  # smaller segmented blobs are treated as noise, not tumour evidence
SLICE_TUMOR_PROBABILITY = 0.5  # a slice "is classified a tumour" where p(no tumour) is below this
NO_TUMOR = CLASSES.index("no_tumor")
NO_EVIDENCE_WEIGHT = 0.02  # how much a tumour-free slice votes relative to a mm^2 of lesion, per mm^2 of brain

# Share of the progress bar per stage, roughly their cost. "load_model" waits for what is left of the model preload.
_STAGES = {"preprocess": 0.03, "register": 0.17, "load_model": 0.02, "model": 0.15, "explain": 0.38, "threshold": 0.02,
           "faithfulness": 0.15, "atlas": 0.04, "report": 0.04}


@dataclass
class Result:
    findings: dict
    images: dict[str, sitk.Image]  # file stem -> image on the input grid
    mni_images: dict[str, sitk.Image]
    registration: register.Registration | None
    overview: dict = field(default_factory=dict)  # arrays for the overview figure, in model orientation
    slice_probabilities: np.ndarray | None = None  # (analysed slices, classes), for audits of the volume vote
    analysed_slices: np.ndarray | None = None  # their indices along the model's axial axis


def _image_like(arr: np.ndarray, reference: sitk.Image, pixel=sitk.sitkFloat32) -> sitk.Image:
    img = sitk.Cast(sitk.GetImageFromArray(arr), pixel)
    img.CopyInformation(reference)
    return img


def _diagnosis(probs: np.ndarray, lesion_area: np.ndarray, brain_area: np.ndarray) -> np.ndarray:
    """Volume probabilities: slices vote in proportion to their tumour evidence (segmented lesion area), so the
    few slices through a tumour decide, not the many slices above and below it. With no lesion at all, every
    brain slice votes a little, which is what decides a tumour-free scan."""
    weights = lesion_area + NO_EVIDENCE_WEIGHT * brain_area
    if weights.sum() == 0:
        weights = np.ones(len(probs))
    p = (weights[:, None] * probs).sum(0) / weights.sum()
    return p / p.sum()


def _register(image: sitk.Image, oriented: sitk.Image, head: np.ndarray, info: InputInfo, notes: list[str],
              track: Tracker, cancel: Cancel | None) -> tuple[register.Registration | None, np.ndarray]:
    """(the registration or None for a 2-D slice, the brain mask in model orientation). Refuses what is not a brain.
    The MNI brain carried onto the scan says where a brain tumour can be, so the neck, face and orbits (never in
    the training slices) neither vote nor yield lesions."""
    if info.kind != "volume":  # one 2D slice cannot be placed in 3D MNI space
        return None, head
    reg = register.register_to_mni(image, progress=track.report, cancel=cancel)
    guard.refuse_if_not_brain(reg)  # before the model: no diagnosis of what is not a brain MRI
    if not reg.converged:
        notes.append("Registration to MNI152 did not converge cleanly: the whole head was analysed (no brain "
                     "mask) and the anatomical localisation should be treated with caution.")
        return reg, head
    region = register.brain_region(oriented, reg)  # kept: a view of a freed image reads freed memory
    return reg, head & (sitk.GetArrayViewFromImage(region) > 0)


def _lesion(seg_prob: np.ndarray, brain: np.ndarray, probs: np.ndarray, active: np.ndarray, spacing,
            voxel_ml: float) -> np.ndarray:
    """The lesion mask: the segmentation head's blobs that a tumour-classified slice confirms, big enough to count.
    The two heads must agree: a segmented blob counts only where some slice it crosses is classified a tumour."""
    confirmed = np.zeros(len(probs), bool)
    confirmed[active] = probs[active, NO_TUMOR] < SLICE_TUMOR_PROBABILITY
    seg_mask = threshold.confirmed_components((seg_prob > LESION_PROBABILITY) & brain, confirmed)
    seg_mask = threshold.significant_components(seg_mask, spacing)
    if seg_mask.sum() * voxel_ml < MIN_LESION_ML:
        seg_mask[:] = False
    return seg_mask


def _evidence_slices(lesion_area: np.ndarray, probs: np.ndarray, active: np.ndarray, label: int,
                     max_slices: int | None) -> np.ndarray:
    """Slices that carry tumour evidence are explained; a scan without any explains its most confident slices."""
    evidence = np.nonzero(lesion_area > 0)[0]
    if evidence.size == 0:
        evidence = active[np.argsort(-probs[active, label])[: min(5, len(active))]]
    if max_slices and evidence.size > max_slices:
        evidence = np.sort(evidence[np.argsort(-lesion_area[evidence])[:max_slices]])
    return evidence


def _explain(methods: list, model: LoadedModel, slices: np.ndarray, evidence: np.ndarray, features, active,
             probs: np.ndarray, label: int, options: Options, track: Tracker, cancel: Cancel | None,
             brain_model: np.ndarray | None) -> dict[str, np.ndarray]:
    """Each method's heatmap over the evidence slices, in model space (method name -> (slices, size, size)).
    brain_model: the brain mask in model space, where enhancement (options.enhance) takes its percentiles."""
    heat_model: dict[str, np.ndarray] = {}
    for mi, method in enumerate(methods):
        def done(fraction, _mi=mi):  # this method's share of the stage
            track.report((_mi + fraction) / len(methods))

        cams = method(model, slices[evidence], label, done, cancel,
                      features=features[np.searchsorted(active, evidence)], precision=options.precision)
        heat = np.zeros_like(slices)
        if method.level is not None:  # a mask probability: its level means something, it is left as it is
            heat[evidence] = cams
            heat_model[method.name] = heat
            continue
        if options.enhance:
            from .explain.enhance import enhance

            cams = enhance(cams, brain_model[evidence])
        # Each map is scaled to [0, 1] per slice; weighting by the slice's probability for the explained class
        # keeps weakly supported slices dim in the assembled 3D map.
        heat[evidence] = cams * probs[evidence, label][:, None, None]
        heat_model[method.name] = heat
    return heat_model


def _counterfactuals(methods: list, model: LoadedModel, slices: np.ndarray, evidence: np.ndarray,
                     masks: dict[str, np.ndarray], probs: np.ndarray, lesion_area: np.ndarray, brain_area: np.ndarray,
                     options: Options, cancel: Cancel | None) -> dict[str, dict]:
    """Per method, the diagnosis vote again with its mask's region inpainted on the evidence slices (model space;
    masks[name]: (evidence slices, size, size) bool). One classifier pass for every method's edited slices."""
    from .model import predict_classes

    edited, hits = [], {}
    for method in methods:
        hit = masks[method.name].any((1, 2))  # a slice the mask misses is unchanged: its probabilities stand
        hits[method.name] = hit
        edited.append(faithfulness.inpaint(slices[evidence[hit]], masks[method.name][hit]))
    stacked = np.concatenate(edited) if edited else np.zeros((0, *slices.shape[1:]), np.float32)
    new = predict_classes(model, stacked, options.batch_size, cancel, options.precision)
    out, start = {}, 0
    for method in methods:
        hit = hits[method.name]
        p = probs.copy()
        p[evidence[hit]] = new[start : start + hit.sum()]
        start += int(hit.sum())
        out[method.name] = faithfulness.counterfactual(_diagnosis(p, lesion_area, brain_area), CLASSES,
                                                       options.threshold_percentile)
    return out


def _minimal_evidence(methods: list, model: LoadedModel, slices: np.ndarray, evidence: np.ndarray,
                      masks: dict[str, np.ndarray], images_oriented: dict, region: np.ndarray, probs: np.ndarray,
                      lesion_area: np.ndarray, brain_area: np.ndarray, options: Options, cancel: Cancel | None
                      ) -> dict[str, dict]:
    """For a method whose mask claims to be the evidence the call needs (its own level, not a percentile): the call
    with only that region kept on the explained slices (the rest blurred away) and the region's share of the brain
    on those slices. The same vote as the counterfactual, the other way round."""
    from .model import predict_classes

    out = {}
    for method in methods:
        p = probs.copy()
        p[evidence] = predict_classes(model, faithfulness.keep_only(slices[evidence], masks[method.name]),
                                      options.batch_size, cancel, options.precision)
        volume = _diagnosis(p, lesion_area, brain_area)
        area = images_oriented[layout.mask(method.name)].sum() / max(int(region.sum()), 1)
        out[method.name] = {"level": float(method.level), "area_percent_of_brain": round(100 * float(area), 2),
                            "label": CLASSES[int(volume.argmax())],
                            "probabilities": {c: round(float(v), 4) for c, v in zip(CLASSES, volume)}}
    return out


def _case_faithfulness(methods: list, model: LoadedModel, slices: np.ndarray, evidence: np.ndarray,
                       heat_model: dict[str, np.ndarray], lesion_area: np.ndarray, probs: np.ndarray, label: int,
                       options: Options, cancel: Cancel | None) -> dict[str, dict]:
    """Deletion / insertion of each method's map on the few explained slices that carry the most lesion (the most
    confident ones without a lesion), against random maps on the same slices."""
    rank = lesion_area[evidence] if lesion_area[evidence].any() else probs[evidence, label]
    pick = np.sort(evidence[np.argsort(-rank, kind="stable")[: faithfulness.CASE_SLICES]])
    return faithfulness.case_scores(model, slices[pick], {m.name: heat_model[m.name][pick] for m in methods}, label,
                                    options.precision, cancel)


def _atlas(images: dict[str, sitk.Image], reg: register.Registration | None, has_lesion: bool,
           first_method: str | None) -> tuple[list, dict, dict[str, sitk.Image]]:
    """(regions the lesion touches, lesion summary, the images in MNI space) — empty without a registration."""
    summary = {"centroid_mni": None, "hemisphere": None, "peak_region": None}
    if reg is None:
        return [], summary, {}
    mni_images = {
        name: register.to_mni(img, reg, "nearest" if img.GetPixelID() == sitk.sitkUInt8 else "linear")
        for name, img in images.items() if name != layout.ANALYSIS_REGION
    }
    lesion_mni = mni_images[layout.SEGMENTATION]
    first_heat = mni_images[layout.heatmap(first_method)] if first_method else None
    regions = atlas.region_table(lesion_mni) if has_lesion else []
    summary = atlas.lesion_summary(lesion_mni, first_heat)
    mni_images[layout.ATLAS_REGIONS] = atlas.region_labelmap([r["index"] for r in regions], lesion_mni)
    return regions, summary, mni_images


def analyse(
    image: sitk.Image,
    info: InputInfo,
    options: Options | None = None,
    model: LoadedModel | None = None,
    phantom: bool = False,
    warnings: list[str] | None = None,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
) -> Result:
    """The pipeline on IMAGE, in memory, stage by stage in the order they run: preprocess -> register (refuses what
    is not a brain; the brain mask) -> model (slice probabilities, segmentation, input check) -> lesion (the heads
    must agree) and diagnosis -> explain (CAMs on the evidence slices) -> threshold (heatmaps to masks, back on the
    input grid) -> faithfulness (each mask's region removed: the call again; deletion / insertion) -> atlas (MNI
    images and regions) -> findings. Nothing is written (see write_outputs)."""
    options = options or Options()
    names = check_names(options.methods)
    if model is None:
        weights_path(options.model_path)  # a missing weights file is said now, not after the registration
    ready, cams = runtime.preload(model, options, names)
    track = Tracker(progress, cancel, _STAGES)
    notes = list(info.warnings) + list(warnings or [])  # what the load stage repaired or assumed first

    track.stage("preprocess")
    oriented, arr, head = preprocess.oriented_volume(image)
    sx, sy, sz = oriented.GetSpacing()
    voxel_ml = sx * sy * sz / 1000.0

    track.stage("register")
    reg, brain = _register(image, oriented, head, info, notes, track, cancel)
    brain_area = brain.sum((1, 2)) * sx * sy
    active = np.nonzero(brain_area > 0)[0]

    track.stage("load_model")  # usually done by now: what is left of the preload
    model = ready.result()
    from .model import predict_slices  # imported by the preload: free now

    track.stage("model")
    scaled = preprocess.scale_intensity(arr)  # for the model and the overview figure
    frame, slices = preprocess.frame_slices(scaled, head, model.cfg.input_size)
    probs = np.zeros((len(arr), len(CLASSES)), np.float32)
    seg_model = np.zeros_like(slices)
    # The forward pass also keeps what the classification head pools: every CAM method starts from it.
    probs[active], seg_model[active], features = predict_slices(model, slices[active], options.batch_size, track.report,
                                                                cancel, options.precision, keep_features=True)
    if reg is not None:  # also where registration did not converge: the check may say why
        contrast = guard.contrast_probability(features, model.path, model.sha256) if model.path else None
        input_check = guard.check(reg, contrast)
        notes += guard.warnings(input_check, -reg.metric_value)
    else:
        input_check = guard.unchecked()

    seg_mask = _lesion(preprocess.from_model(seg_model, frame), brain, probs, active, oriented.GetSpacing(),
                       voxel_ml)
    lesion_area = seg_mask.sum((1, 2)) * sx * sy
    p_volume = _diagnosis(probs, lesion_area, brain_area)
    label = int(p_volume.argmax())
    if label == NO_TUMOR and seg_mask.any():
        # A lesion, its volume and its regions beside a "no tumour" call would contradict the diagnosis; what the
        # segmentation head marked is still said, so a missed tumour is not silently hidden.
        notes.append(f"The segmentation head marked {seg_mask.sum() * voxel_ml:.1f} mL that the classifier does not "
                     "support (scan classified as no tumour): not reported as a lesion; review the scan if a lesion "
                     "is suspected.")
        seg_mask[:] = False
        lesion_area = seg_mask.sum((1, 2)) * sx * sy
    evidence = _evidence_slices(lesion_area, probs, active, label, options.max_cam_slices)

    track.stage("explain")
    methods = cams.result()  # imported on the preload thread while the model ran
    brain_model = preprocess.to_model(brain.astype(np.float32), frame) > 0.5 if options.enhance else None
    heat_model = _explain(methods, model, slices, evidence, features, active, probs, label, options, track, cancel,
                          brain_model)

    track.stage("threshold")
    explained = np.zeros(len(arr), bool)
    explained[evidence] = True
    region = brain & explained[:, None, None]
    # The region the heatmaps are thresholded in (brain x explained slices): lets a viewer re-threshold exactly.
    images_oriented: dict[str, np.ndarray] = {layout.SEGMENTATION: seg_mask.astype(np.uint8),
                                              layout.ANALYSIS_REGION: region.astype(np.uint8)}
    explanations = []
    for method in methods:
        heat = np.clip(preprocess.from_model(heat_model[method.name], frame), 0, 1) * brain
        if method.level is not None:
            mask = threshold.level_mask(heat, region, oriented.GetSpacing(), method.level)
        else:
            mask, _ = threshold.threshold_heatmap(heat, region, oriented.GetSpacing(), options.threshold_percentile)
        images_oriented[layout.heatmap(method.name)] = heat.astype(np.float32)
        images_oriented[layout.mask(method.name)] = mask.astype(np.uint8)
        explanations.append({
            "method": method.name,
            "target_class": CLASSES[label],
            "threshold_percentile": float(options.threshold_percentile),
            **({"threshold_level": float(method.level)} if method.level is not None else {}),
            **({"enhanced": True} if options.enhance and method.level is None else {}),
            **threshold.mask_stats(mask, seg_mask, voxel_ml),
            "slices_explained": int(len(evidence)),
        })
    images = {
        name: preprocess.restore_orientation(
            _image_like(a, oriented, sitk.sitkUInt8 if a.dtype == np.uint8 else sitk.sitkFloat32), image)
        for name, a in images_oriented.items()
    }

    track.stage("faithfulness")
    # The masks as thresholded on the input grid, back in model space: the regions the counterfactual removes.
    masks_model = {m.name: preprocess.to_model(images_oriented[layout.mask(m.name)][evidence].astype(np.float32),
                                               frame) > 0.5 for m in methods}
    counter = _counterfactuals(methods, model, slices, evidence, masks_model, probs, lesion_area, brain_area, options,
                               cancel)
    kept = _minimal_evidence([m for m in methods if m.level is not None], model, slices, evidence, masks_model,
                             images_oriented, region, probs, lesion_area, brain_area, options, cancel)
    track.report(0.5)
    scores = _case_faithfulness(methods, model, slices, evidence, heat_model, lesion_area, probs, label, options, cancel)
    for entry in explanations:
        entry.update(counterfactual=counter[entry["method"]], faithfulness=scores[entry["method"]])
        if entry["method"] in kept:
            entry["minimal_evidence"] = kept[entry["method"]]

    track.stage("atlas")
    regions, summary, mni_images = _atlas(images, reg, bool(seg_mask.any()), methods[0].name if methods else None)

    track.stage("report")
    if info.kind == "slice":
        notes.append("Single 2D slice: the lesion area stands for a volume, and without registration there are no "
                     "MNI coordinates or atlas regions.")
    result_findings = {
        "schema_version": findings_mod.SCHEMA_VERSION,
        "input": {
            "shape": [int(s) for s in image.GetSize()],
            "spacing_mm": [round(float(s), 4) for s in image.GetSpacing()],
            "phantom": bool(phantom),
            "kind": info.kind,
            "format": info.format,
        },
        "model": model.info(),
        "diagnosis": {
            "label": CLASSES[label],
            "probabilities": {c: round(float(p), 4) for c, p in zip(CLASSES, p_volume)},
            "slices_with_tumor_evidence": int((lesion_area > 0).sum()),
            "slices_total": int(len(arr)),
        },
        "lesion": {
            "volume_ml": round(float(seg_mask.sum() * voxel_ml), 2),
            "centroid_mni": summary["centroid_mni"],
            "hemisphere": summary["hemisphere"],
            "peak_region": summary["peak_region"],
            "source": "segmentation head",
        },
        "regions": [
            {k: r[k] for k in ("name", "percent_of_lesion", "percent_of_region", "hemisphere")} for r in regions
        ],
        "atlas": {"name": atlas.ATLAS_NAME, "probability_threshold_percent": atlas.DEFAULT_PROB_THRESHOLD},
        "explanations": explanations,
        "registration": reg.as_dict() if reg is not None else None,
        "input_check": input_check,
        "warnings": notes,
        "software": {"name": "BrainXAI", "version": __version__},
    }
    findings_mod.validate(result_findings)
    track.report(1.0)
    overview = {
        "image": scaled,
        "spacing": (sx, sy),
        "heatmap": images_oriented[layout.heatmap(methods[0].name)] if methods else None,
        "mask": images_oriented[layout.mask(methods[0].name)] if methods else None,
        "segmentation": seg_mask,
        "method": methods[0].title if methods else "",
        "label": CLASSES[label],
        "phantom": phantom,
    }
    return Result(result_findings, images, mni_images, reg, overview, probs[active], active)


def write_outputs(result: Result, out_dir: str | Path, overwrite: bool = False) -> Path:
    """Write everything into a temporary sibling folder, then move it into place: no partial DIR on failure."""
    from .overview import save_overview

    out_dir = Path(out_dir).resolve()
    if out_dir.exists() and not out_dir.is_dir():
        raise BrainXAIError(f"output path {out_dir} is a file: give a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise BrainXAIError(f"output folder {out_dir} is not empty: choose another --out or pass --overwrite")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        images = {tmp / layout.image(name): img for name, img in result.images.items()}
        if result.registration is not None:
            (tmp / layout.MNI_DIR).mkdir()
            images.update({tmp / layout.MNI_DIR / layout.image(name): img for name, img in result.mni_images.items()})
            register.save_transform(result.registration, tmp / layout.TRANSFORM)
        # SimpleITK compresses and writes without the GIL while this thread draws the overview.
        with ThreadPoolExecutor(2, thread_name_prefix="brainxai-write") as pool:
            writes = [pool.submit(sitk.WriteImage, img, str(path), True) for path, img in images.items()]
            findings_mod.write_findings(result.findings, tmp / layout.FINDINGS)
            report.write_report(result.findings, tmp)
            save_overview(result.overview, tmp / layout.OVERVIEW)
            for w in writes:
                w.result()
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, (OSError, RuntimeError)):  # disk full, no permission, a writer's failure: one line
            raise output.write_error(exc, out_dir.parent) from exc
        raise
    return out_dir


def explain(
    input_path: str | Path | None,
    out_dir: str | Path,
    options: Options | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
    assume_geometry: bool = False,
    series: str | None = None,
) -> Result:
    """Run the whole pipeline on a file (or the bundled phantom when input_path is None) and write DIR.
    assume_geometry: accept a NIfTI header without usable voxel size or orientation; series: the DICOM series to
    read from a folder that holds several (see load.read_input)."""
    out = Path(out_dir)
    if out.is_dir() and any(out.iterdir()) and not overwrite:  # refuse before spending minutes on the work
        raise BrainXAIError(f"output folder {out.resolve()} is not empty: choose another --out or pass --overwrite")
    with output.claim(out):  # one run per folder; what a killed run left there is cleared first
        if input_path is None:
            from .phantom import PHANTOM_WARNING, make_phantom

            image, info, phantom, notes = make_phantom(), InputInfo("volume", "synthetic"), True, [PHANTOM_WARNING]
        else:
            (image, info), phantom, notes = read_input(input_path, assume_geometry, series), False, []
        result = analyse(image, info, options, phantom=phantom, warnings=notes, progress=progress, cancel=cancel)
        write_outputs(result, out_dir, overwrite)
    return result

