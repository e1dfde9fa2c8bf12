"""Load stage: any scalar 3D volume SimpleITK reads (NIfTI, NRRD, MHA, a DICOM series folder) or a 2D PNG/JPEG.

Only pixels and geometry are kept: no metadata (names, IDs, dates, institution) leaves this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import BrainXAIError

IMAGE_2D = {".png", ".jpg", ".jpeg"}
MIN_INPLANE_VOXELS = 32
MIN_EXTENT_MM = 60.0  # smaller than any adult brain in-plane


@dataclass(frozen=True)
class InputInfo:
    kind: str  # "volume" | "slice"
    format: str  # "NIfTI", "NRRD", "MetaImage", "DICOM", "PNG", "JPEG", ...


def _format_of(path: Path) -> str:
    name = path.name.lower()
    for suffix, fmt in ((".nii.gz", "NIfTI"), (".nii", "NIfTI"), (".nrrd", "NRRD"), (".nhdr", "NRRD"),
                        (".mha", "MetaImage"), (".mhd", "MetaImage"), (".png", "PNG"), (".jpg", "JPEG"),
                        (".jpeg", "JPEG"), (".dcm", "DICOM")):
        if name.endswith(suffix):
            return fmt
    return "other"  # any other format SimpleITK reads; the findings schema allows only known names


def _read_dicom_series(folder: Path) -> sitk.Image:
    ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not ids:
        raise BrainXAIError(f"no DICOM series in folder {folder}: give a folder of DICOM files or a volume file")
    # Several series in one folder: take the one with most slices (the volume, not a localiser).
    files = max((sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), i) for i in ids), key=len)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    return reader.Execute()


def _to_gray_2d(img: sitk.Image, path: Path) -> sitk.Image:
    if img.GetNumberOfComponentsPerPixel() > 1:
        arr = sitk.GetArrayFromImage(img).astype(np.float32)[..., :3]
        gray = sitk.GetImageFromArray(arr @ np.array([0.299, 0.587, 0.114], np.float32))
        gray.CopyInformation(img)
        img = gray
    if img.GetDimension() != 2:
        raise BrainXAIError(f"{path.name} is not a 2D image: PNG/JPEG inputs must be single slices")
    # One axial slice: image rows run anterior->posterior, columns patient right->left (radiological display).
    return sitk.JoinSeries(sitk.Cast(img, sitk.sitkFloat32))


def read_input(path: str | Path) -> tuple[sitk.Image, InputInfo]:
    """Read and check an input; returns a float32 3D image with its geometry, or raises one clear BrainXAIError."""
    path = Path(path)
    if not path.exists():
        raise BrainXAIError(f"input not found: {path}")
    try:
        if path.is_dir():
            img, fmt = _read_dicom_series(path), "DICOM"
        else:
            img, fmt = sitk.ReadImage(str(path)), _format_of(path)
    except BrainXAIError:
        raise
    except RuntimeError as exc:
        raise BrainXAIError(f"cannot read {path.name}: not an image SimpleITK understands (NIfTI, NRRD, MHA, DICOM folder, PNG, JPEG)") from exc
    kind = "volume"
    if path.suffix.lower() in IMAGE_2D:
        img, kind = _to_gray_2d(img, path), "slice"
    if img.GetDimension() == 4 and img.GetSize()[3] == 1:
        img = img[:, :, :, 0]
    if img.GetDimension() != 3:
        raise BrainXAIError(f"{path.name} is {img.GetDimension()}D: give a single 3D volume (split 4D series first)")
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise BrainXAIError(f"{path.name} has {img.GetNumberOfComponentsPerPixel()} components per voxel (RGB/vector): give a scalar greyscale MRI volume")
    img = sitk.Cast(img, sitk.sitkFloat32)
    check_image(img, path.name)
    return img, InputInfo(kind, fmt)


def check_image(img: sitk.Image, name: str) -> None:
    arr = sitk.GetArrayViewFromImage(img)
    if not np.isfinite(arr).all():
        raise BrainXAIError(f"{name} contains NaN or infinite voxels: fix or mask them before running BrainXAI")
    if float(arr.max()) == float(arr.min()):
        raise BrainXAIError(f"{name} is constant (all voxels {float(arr.min()):g}): it holds no image")
    size, spacing = np.array(img.GetSize()), np.array(img.GetSpacing())
    inplane = np.sort(size)[-2:]
    if inplane.min() < MIN_INPLANE_VOXELS:
        raise BrainXAIError(f"{name} is too small ({'x'.join(map(str, size))} voxels) to be a brain MRI: need at least {MIN_INPLANE_VOXELS} voxels in-plane")
    if size.min() > 1 and np.sort(size * spacing)[-2:].min() < MIN_EXTENT_MM:
        raise BrainXAIError(f"{name} covers only {np.round(size * spacing, 1).tolist()} mm: too small to be a brain; check its spacing")
