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

from . import CLASSES
from .errors import BrainXAIError
from .preprocess import prepare_slice

GAP = 20
VAL_FRACTION = 0.2


@dataclass
class Sample:
    key: str  # "figshare:123" / "br35h:3065"
    index: int
    label: str
    image: Path
    mask: Path | None


def figshare_samples(root: Path) -> list[Sample]:
    table = root / "labels.csv"
    if not table.is_file():
        raise BrainXAIError(f"no labels.csv in {root}: point --data at the figshare folder of the shared data")
    with open(table, newline="") as f:
        return [
            Sample(f"figshare:{r['index']}", int(r["index"]), r["label"], root / r["image"], root / r["mask"])
            for r in csv.DictReader(f)
        ]


def no_tumor_samples(root: Path) -> list[Sample]:
    files = sorted((p for p in root.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"}), key=lambda p: int(p.stem))
    if not files:
        raise BrainXAIError(f"no images in {root}: point --no-tumor at the br35h_no_tumor folder of the shared data")
    return [Sample(f"br35h:{p.stem}", int(p.stem), "no_tumor", p, None) for p in files]


def block_split(samples: list[Sample]) -> tuple[list[Sample], list[Sample]]:
    """Per label, the middle VAL_FRACTION of its indices (a contiguous range) is validation; slices within GAP
    indices of a validation range are dropped from training."""
    ranges = []
    for label in sorted({s.label for s in samples}):
        idx = sorted(s.index for s in samples if s.label == label)
        lo_rank = int(len(idx) * (0.5 - VAL_FRACTION / 2))
        hi_rank = int(len(idx) * (0.5 + VAL_FRACTION / 2)) - 1
        ranges.append((idx[lo_rank], idx[hi_rank]))
    val = [s for s in samples if any(lo <= s.index <= hi for lo, hi in ranges)]
    train = [s for s in samples if not any(lo - GAP <= s.index <= hi + GAP for lo, hi in ranges)]
    return train, val


def load_gray(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("L"), dtype=np.float32)


def tensorise(samples: list[Sample], size: int, cache: Path | None = None) -> dict[str, np.ndarray]:
    """Images (N, size, size) float16, masks (N, size, size) bool, labels (N,) int64; cached on disk by content key."""
    key = hashlib.sha1(("|".join(s.key for s in samples) + f"|{size}|v1").encode()).hexdigest()[:16]
    cached = cache / f"slices-{key}.npz" if cache else None
    if cached and cached.is_file():
        with np.load(cached) as z:
            return dict(z)
    images = np.zeros((len(samples), size, size), np.float16)
    masks = np.zeros((len(samples), size, size), bool)
    for i, s in enumerate(tqdm(samples, desc=f"preparing {len(samples)} slices", unit="slice")):
        mask = load_gray(s.mask) > 127 if s.mask else None
        img, m = prepare_slice(load_gray(s.image), size, mask)
        images[i] = img
        if m is not None:
            masks[i] = m
    out = {"images": images, "masks": masks, "labels": np.array([CLASSES.index(s.label) for s in samples], np.int64)}
    if cached:
        cached.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cached, **out)
    return out


def load_split(data_root: Path, size: int, cache: Path | None = None):
    data_root = Path(data_root)
    fig_train, fig_val = block_split(figshare_samples(data_root / "figshare"))
    no_train, no_val = block_split(no_tumor_samples(data_root / "br35h_no_tumor"))
    train, val = fig_train + no_train, fig_val + no_val
    return train, val, tensorise(train, size, cache), tensorise(val, size, cache)
