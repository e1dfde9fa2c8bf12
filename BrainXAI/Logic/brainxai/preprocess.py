"""Preprocess stage: orientation, intensity scaling and the square model frame, shared by training and inference.

Training slices and volume slices go through the same functions, so the model sees one convention:
axial slices in radiological display (rows anterior -> posterior, columns patient right -> left),
intensities scaled to [0, 1] by robust percentiles, head cropped and padded to a square, resized to the model size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

MODEL_ORIENTATION = "LPS"  # ITK index axes i->Left, j->Posterior, k->Superior: array[k] is a radiological axial slice


def orient_for_model(image: sitk.Image) -> sitk.Image:
    """Permute/flip axes (no resampling) so that array[k, j, i] is an axial slice in radiological display."""
    return sitk.DICOMOrient(image, MODEL_ORIENTATION)


def restore_orientation(oriented: sitk.Image, reference: sitk.Image) -> sitk.Image:
    """Undo orient_for_model exactly: the result has reference's grid, voxel for voxel."""
    code = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(reference.GetDirection())
    back = sitk.DICOMOrient(oriented, code)
    if back.GetSize() != reference.GetSize():
        raise AssertionError(f"orientation round trip changed the grid {back.GetSize()} != {reference.GetSize()}")
    # DICOMOrient only permutes and flips; copying the geometry removes float round-off in origin/direction.
    back.CopyInformation(reference)
    return back


def foreground_threshold(arr: np.ndarray) -> float:
    """Air/background cut: a small fraction of the bright end, robust to a few hot voxels."""
    hi = float(np.percentile(arr, 99.5))
    return 0.05 * hi if hi > 0 else 0.0


def scale_intensity(arr: np.ndarray) -> np.ndarray:
    """Map intensities to [0, 1]: 0 at the 0.5th and 1 at the 99.5th percentile of the foreground."""
    arr = arr.astype(np.float32, copy=False)
    fg = arr[arr > foreground_threshold(arr)]
    if fg.size < 16:
        return np.zeros_like(arr)
    lo, hi = np.percentile(fg, [0.5, 99.5])
    lo = min(lo, 0.0) if arr.min() >= 0 else lo  # keep true black black for non-negative images
    out = (arr - lo) / max(hi - lo, 1e-6)
    return np.clip(out, 0.0, 1.0, out=out)


@dataclass(frozen=True)
class SquareFrame:
    """Where the model's square sits in the original 2D slice grid (rows, cols)."""

    r0: int
    r1: int
    c0: int
    c1: int
    side: int  # padded square side in original pixels
    shape: tuple[int, int]  # original slice shape
    size: int  # model input size


def head_frame(fg: np.ndarray, size: int, margin: float = 0.04) -> SquareFrame:
    """Square frame around the foreground (2D mask, or the union of a stack along axis 0)."""
    m = fg.any(axis=0) if fg.ndim == 3 else fg
    shape = m.shape
    rows, cols = np.nonzero(m.any(1))[0], np.nonzero(m.any(0))[0]
    if rows.size == 0:
        r0, r1, c0, c1 = 0, shape[0], 0, shape[1]
    else:
        pad = int(round(margin * max(shape)))
        r0, r1 = max(rows[0] - pad, 0), min(rows[-1] + 1 + pad, shape[0])
        c0, c1 = max(cols[0] - pad, 0), min(cols[-1] + 1 + pad, shape[1])
    return SquareFrame(r0, r1, c0, c1, max(r1 - r0, c1 - c0), shape, size)


def to_model(stack: np.ndarray, frame: SquareFrame, mode: str = "bilinear") -> np.ndarray:
    """(N, H, W) -> (N, size, size): crop the frame, centre-pad to a square, resize."""
    import torch  # here, not at the top: orientation and scaling run while torch is still being imported
    import torch.nn.functional as F

    crop = torch.from_numpy(np.ascontiguousarray(stack[:, frame.r0 : frame.r1, frame.c0 : frame.c1], np.float32))
    h, w = crop.shape[1:]
    top, left = (frame.side - h) // 2, (frame.side - w) // 2
    sq = F.pad(crop, (left, frame.side - w - left, top, frame.side - h - top))
    kw = {"antialias": True, "align_corners": False} if mode == "bilinear" else {}
    return F.interpolate(sq[:, None], size=(frame.size, frame.size), mode=mode, **kw)[:, 0].numpy()


def from_model(maps: np.ndarray, frame: SquareFrame, mode: str = "bilinear") -> np.ndarray:
    """Inverse of to_model: (N, size, size) -> (N, H, W) on the original slice grid, zero outside the frame."""
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(maps, np.float32))[:, None]
    kw = {"align_corners": False} if mode == "bilinear" else {}
    sq = F.interpolate(t, size=(frame.side, frame.side), mode=mode, **kw)[:, 0]
    h, w = frame.r1 - frame.r0, frame.c1 - frame.c0
    top, left = (frame.side - h) // 2, (frame.side - w) // 2
    out = np.zeros((len(maps), *frame.shape), np.float32)
    out[:, frame.r0 : frame.r1, frame.c0 : frame.c1] = sq[:, top : top + h, left : left + w].numpy()
    return out


def prepare_slice(gray: np.ndarray, size: int, mask: np.ndarray | None = None):
    """One 2D training/inference image -> model-frame image (and mask), same path as volume slices."""
    scaled = scale_intensity(gray)
    frame = head_frame(gray > foreground_threshold(gray), size)
    img = to_model(scaled[None], frame)[0]
    if mask is None:
        return img, None
    return img, to_model(mask[None].astype(np.float32), frame)[0] > 0.5


def oriented_volume(image: sitk.Image):
    """(reoriented image, its array, head mask): axial slices in radiological display, no model needed."""
    oriented = orient_for_model(image)
    arr = sitk.GetArrayFromImage(oriented)  # (k, j, i)
    return oriented, arr, arr > foreground_threshold(arr)


def frame_slices(scaled: np.ndarray, head: np.ndarray, size: int):
    """(square frame around the head, the slices as a model of input `size` sees them); `scaled`: the volume
    through scale_intensity."""
    frame = head_frame(head, size)
    return frame, to_model(scaled, frame)


def model_slices(image: sitk.Image, size: int):
    """The volume as the model sees it: (reoriented image, its array, head mask, square frame, model slices)."""
    oriented, arr, head = oriented_volume(image)
    return (oriented, arr, head, *frame_slices(scale_intensity(arr), head, size))


def head_mask(img: np.ndarray, level: float = 0.08) -> np.ndarray:
    """A model-size slice's head as one filled blob (training's head masks; the minimal-evidence area's reference)."""
    from scipy import ndimage as ndi

    head = ndi.binary_fill_holes(ndi.binary_closing(img > level, iterations=2))
    lab, n = ndi.label(head)
    if n == 0:
        return head
    return lab == np.argmax(np.bincount(lab.ravel())[1:]) + 1
