"""A corpus of broken or wrong inputs, generated from one real volume (nothing binary is committed). Used by
test_bad_inputs.py, and to measure the refusal rates: `python Testing/bad_inputs.py OUT --from VOLUME`, then
`brainxai check OUT --register`.

Each kind: (name, expected, make) where expected is "refused" (one line, nothing written), "warned" (a result,
with a warning that says what was repaired) or "ok"."""

from __future__ import annotations

import argparse
import gzip
import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from PIL import Image


def _nifti_bytes(arr: np.ndarray, affine: np.ndarray) -> bytes:
    img = nib.Nifti1Image(arr, affine)
    return img.to_bytes()


def _write_nifti(path: Path, arr, affine):
    nib.save(nib.Nifti1Image(arr, affine), str(path))
    return path


def _patch(raw: bytes, fmt: str, offset: int, *values) -> bytes:
    b = bytearray(raw)
    struct.pack_into(fmt, b, offset, *values)
    return bytes(b)


def _dicom_series(folder: Path, vol: np.ndarray, spacing, uid: str, description: str = "T1 post contrast",
                  steps=None, tilt_mm: float = 0.0, skip=()) -> Path:
    """VOL (z, y, x) as one classic MR DICOM file per slice; STEPS: slice positions (mm) in place of a uniform grid,
    TILT_MM: how far each slice shifts posteriorly (a gantry tilt), SKIP: slices left out."""
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(len(vol)):
        if k in skip:
            continue
        z = steps[k] if steps is not None else k * spacing[2]
        image = sitk.GetImageFromArray(vol[k].astype(np.int16))
        image.SetSpacing(spacing[:2])
        for key, value in {"0008|0060": "MR", "0008|0016": "1.2.840.10008.5.1.4.1.1.4", "0008|0018": f"{uid}.{k + 1}",
                           "0020|000d": "1.2.826.0.1.3680043.2.1125.1", "0020|000e": uid, "0008|103e": description,
                           "0020|0037": "1\\0\\0\\0\\1\\0", "0020|0032": f"-90\\{-110 + k * tilt_mm}\\{z - 60}",
                           "0020|0013": str(k + 1), "0018|0050": str(spacing[2])}.items():
            image.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"S{uid.rsplit('.', 1)[-1]}_IM{k:04d}.dcm"))
        writer.Execute(image)
    return folder


def make_corpus(out: Path, volume: Path, jpeg: Path | None = None) -> list[dict]:
    """Write every kind under OUT (one file or folder each); returns [{name, path, expected}]."""
    out.mkdir(parents=True, exist_ok=True)
    src = nib.load(str(volume))
    arr = np.asarray(src.dataobj, dtype=np.float32)
    aff = src.affine
    rng = np.random.default_rng(0)
    raw = _nifti_bytes(arr, aff)
    rows = []

    def add(name, expected, path):
        rows.append({"name": name, "path": str(path), "expected": expected})

    p = out / "truncated.nii.gz"
    full = gzip.compress(raw)
    p.write_bytes(full[: len(full) // 3])
    add("truncated .nii.gz (first third)", "refused", p)
    p = out / "truncated.nii"
    p.write_bytes(raw[: len(raw) // 2])
    add("truncated .nii", "refused", p)
    p = out / "crc.nii.gz"
    b = bytearray(full)
    b[len(b) // 2: len(b) // 2 + 64] = bytes(64)
    p.write_bytes(bytes(b))
    add("corrupt .nii.gz (damaged block)", "refused", p)
    p = out / "empty.nii.gz"
    p.write_bytes(b"")
    add("empty file", "refused", p)
    p = out / "junk.nii.gz"
    p.write_bytes(b"this is not an image at all" * 10)
    add("text named .nii.gz", "refused", p)
    nan = arr.copy()
    nan[tuple(slice(s // 3, s // 3 + 10) for s in arr.shape)] = np.nan
    add("NaN block", "warned", _write_nifti(out / "nan_block.nii.gz", nan, aff))
    inf = arr.copy()
    inf[tuple(s // 2 for s in arr.shape)] = np.inf
    add("one Inf voxel", "warned", _write_nifti(out / "inf_voxel.nii.gz", inf, aff))
    add("all NaN", "refused", _write_nifti(out / "all_nan.nii.gz", np.full(arr.shape, np.nan, np.float32), aff))
    add("constant", "refused", _write_nifti(out / "constant.nii.gz", np.full(arr.shape, 7.0, np.float32), aff))
    labels = np.zeros(arr.shape, np.uint8)
    labels[arr > np.percentile(arr, 60)] = 1
    labels[arr > np.percentile(arr, 90)] = 2
    add("label map (0-2)", "refused", _write_nifti(out / "labelmap.nii.gz", labels, aff))
    binary = np.where(rng.random(arr.shape) > 0.5, 32767, -32768).astype(np.int16)
    add("binary int16 extremes", "refused", _write_nifti(out / "int16_extremes.nii.gz", binary, aff))
    smooth = sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(
        sitk.GetImageFromArray(rng.random(arr.shape[::-1]).astype(np.float32)), 4.0)).transpose(2, 1, 0)
    add("smooth random noise", "refused", _write_nifti(out / "smooth_noise.nii.gz", smooth * 1000, aff))
    ct = np.where(arr > np.percentile(arr, 40), 40.0, -1000.0) + rng.normal(0, 15, arr.shape)
    ct[arr > np.percentile(arr, 97)] = 1500.0
    add("CT-like (Hounsfield units)", "refused", _write_nifti(out / "ct.nii.gz", ct.astype(np.int16), aff))
    p = out / "zero_spacing.nii"
    p.write_bytes(_patch(_patch(raw, "<3f", 80, 0.0, 0.0, 0.0), "<2h", 252, 0, 0))
    add("zero voxel size, no orientation", "refused", p)
    p = out / "no_orientation.nii"
    p.write_bytes(_patch(raw, "<2h", 252, 0, 0))
    add("no orientation", "refused", p)
    p = out / "negative_spacing.nii"
    p.write_bytes(_patch(raw, "<f", 84, -1.0 * abs(float(src.header["pixdim"][2]))))
    add("negative voxel size", "refused", p)
    p = out / "huge_header.nii"
    p.write_bytes(_patch(raw, "<4h", 40, 3, 30000, 30000, 30000))
    add("header declaring 27e12 voxels", "refused", p)
    shear = aff.copy()
    shear[:3, 1] += 0.3 * aff[:3, 0]  # the second voxel axis leans along the first
    add("sheared affine", "warned", _write_nifti(out / "sheared.nii.gz", arr, shear))
    add("4D (three volumes)", "refused", _write_nifti(out / "four_d.nii.gz", np.stack([arr] * 3, -1), aff))
    small = arr[::8, ::8, ::8].copy()
    add("too few voxels", "refused", _write_nifti(out / "few_voxels.nii.gz", small, np.diag([1, 1, 1, 1.0])))
    add("tiny field of view", "refused", _write_nifti(out / "tiny_extent.nii.gz", arr, np.diag([0.2, 0.2, 0.2, 1.0])))
    rgb = sitk.Compose(*[sitk.GetImageFromArray(arr.T.copy())] * 3)
    p = out / "rgb_volume.nrrd"
    sitk.WriteImage(rgb, str(p))
    add("RGB volume", "refused", p)
    p = out / "photo.jpg"
    Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(p)
    add("random colour photograph", "refused", p)
    mid = arr[:, :, arr.shape[2] // 2]
    grey = (255 * (mid - mid.min()) / max(float(np.ptp(mid)), 1e-6)).T[::-1].astype(np.uint8)
    p = out / "slice_16bit.png"
    Image.fromarray((grey.astype(np.uint16) * 257)).save(p)
    add("16-bit greyscale PNG slice", "ok", p)
    p = out / "slice_palette.png"
    Image.fromarray(grey).convert("P").save(p)
    add("palette PNG slice", "ok", p)
    p = out / "slice_cmyk.jpg"
    Image.fromarray(grey).convert("CMYK").save(p)
    add("CMYK JPEG slice", "ok", p)
    folder = out / "dir with spaces é"
    folder.mkdir(exist_ok=True)
    p = folder / "scan ünïcode.nii.gz"
    p.write_bytes(full)
    add("path with spaces and non-ASCII", "ok", p)
    # DICOM: the volume as classic single-frame slices (z, y, x), then what goes wrong with real exports.
    vol = np.clip(arr.T / max(float(arr.max()), 1e-6) * 2000, 0, 2000)
    sp = [float(v) for v in src.header.get_zooms()[:3]]
    uid = "1.2.826.0.1.3680043.2.1125.9"
    add("DICOM series", "ok", _dicom_series(out / "dicom_ok", vol, sp, uid + ".1"))
    both = _dicom_series(out / "dicom_two_series", vol, sp, uid + ".2", "T1 pre contrast")
    add("DICOM folder with two series", "refused", _dicom_series(both, vol, sp, uid + ".3"))
    scout = _dicom_series(out / "dicom_with_localiser", vol, sp, uid + ".4")
    add("DICOM series and a 3-image localiser", "warned",
        _dicom_series(scout, vol[:: max(1, len(vol) // 3)][:3], sp, uid + ".5", "localiser"))
    add("DICOM missing slice in the middle", "refused",
        _dicom_series(out / "dicom_missing_slice", vol, sp, uid + ".6", skip=(len(vol) // 2,)))
    uneven = np.cumsum([0.0] + [sp[2] * (1.0 if k % 2 else 1.6) for k in range(len(vol) - 1)])
    add("DICOM non-uniform slice spacing", "refused",
        _dicom_series(out / "dicom_uneven", vol, sp, uid + ".7", steps=uneven))
    add("DICOM gantry tilt (15 degrees)", "warned",
        _dicom_series(out / "dicom_tilt", vol, sp, uid + ".8", tilt_mm=sp[2] * np.tan(np.radians(15))))
    p = out / "dicom_multiframe"
    p.mkdir(exist_ok=True)
    frames = sitk.GetImageFromArray(vol.astype(np.uint16))
    frames.SetSpacing(sp)
    sitk.WriteImage(frames, str(p / "multiframe.dcm"))
    add("multi-frame DICOM object", "refused", p)
    p = out / "dicom_rgb"
    p.mkdir(exist_ok=True)
    mid8 = (vol[len(vol) // 2] / 2000 * 255).astype(np.uint8)
    sitk.WriteImage(sitk.Compose(*[sitk.GetImageFromArray(mid8)] * 3), str(p / "secondary_capture.dcm"))
    add("RGB secondary capture DICOM", "refused", p)
    huge = _dicom_series(out / "dicom_huge", vol[:12, :8, :8], sp, uid + ".10")
    for f in huge.iterdir():  # rows and columns (US) patched to 65535: 12 x 65535^2 x 2 bytes declared
        raw_dcm = f.read_bytes()
        for tag in (b"\x28\x00\x10\x00", b"\x28\x00\x11\x00"):  # the value sits 8 bytes on, explicit VR or not
            at = next(i for i in range(len(raw_dcm)) if raw_dcm.startswith(tag, i)
                      and raw_dcm[i + 4:i + 8] in (b"US\x02\x00", b"\x02\x00\x00\x00")) + 8
            raw_dcm = raw_dcm[:at] + struct.pack("<H", 65535) + raw_dcm[at + 2:]
        f.write_bytes(raw_dcm)
    add("DICOM header declaring 65535 x 65535 pixels", "refused", huge)
    p = out / "empty_folder"
    p.mkdir(exist_ok=True)
    add("folder without DICOM", "refused", p)
    add("missing path", "refused", out / "does_not_exist.nii.gz")
    return rows


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out", type=Path)
    ap.add_argument("--from", dest="volume", type=Path, required=True, help="a real brain MRI volume (NIfTI)")
    a = ap.parse_args()
    for row in make_corpus(a.out, a.volume):
        print(f"{row['expected']:8} {row['name']}: {row['path']}")
