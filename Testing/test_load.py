"""Load stage: every supported format reads with its geometry; every bad input gives one clear line."""

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from brainxai.errors import BrainXAIError
from brainxai.load import read_input


@pytest.fixture(scope="module")
def ixi(ixi_path):
    return sitk.ReadImage(str(ixi_path), sitk.sitkFloat32)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_volume_formats_keep_geometry(tmp_path, ixi, suffix):
    path = tmp_path / f"vol{suffix}"
    sitk.WriteImage(ixi, str(path))
    img, info = read_input(path)
    assert info.kind == "volume"
    assert img.GetSize() == ixi.GetSize()
    np.testing.assert_allclose(img.GetOrigin(), ixi.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(img.GetDirection(), ixi.GetDirection(), atol=1e-6)
    np.testing.assert_allclose(sitk.GetArrayViewFromImage(img), sitk.GetArrayViewFromImage(ixi))


def test_dicom_series_folder_and_no_identifiers_kept(tmp_path, ixi):
    vol = sitk.Cast(sitk.RescaleIntensity(ixi, 0, 2000), sitk.sitkInt16)
    folder = tmp_path / "dicom"
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()  # otherwise every file gets its own series UID
    for k in range(vol.GetDepth()):
        sl = vol[:, :, k]
        sl.SetMetaData("0010|0010", "Doe^Jane")  # patient name: must not survive
        sl.SetMetaData("0020|000e", "1.2.826.0.1.3680043.2.1125.1")
        sl.SetMetaData("0020|0032", "\\".join(map(str, vol.TransformIndexToPhysicalPoint((0, 0, k)))))
        sl.SetMetaData("0020|0037", "\\".join(map(str, vol.GetDirection()[0:7:3] + vol.GetDirection()[1:8:3])))
        sl.SetMetaData("0028|0030", f"{vol.GetSpacing()[1]}\\{vol.GetSpacing()[0]}")
        sl.SetMetaData("0020|0013", str(k))
        sl.SetMetaData("0008|0018", f"1.2.826.0.1.3680043.2.1125.1.{k + 1}")
        writer.SetFileName(str(folder / f"{k:03d}.dcm"))
        writer.Execute(sl)
    img, info = read_input(folder)
    assert info.format == "DICOM" and img.GetSize() == vol.GetSize()
    np.testing.assert_allclose(img.GetSpacing(), vol.GetSpacing(), atol=1e-3)
    assert not img.GetMetaDataKeys()


def test_png_slice_is_one_axial_slice(tmp_path, data_dir):
    img, info = read_input(data_dir / "figshare" / "images" / "1.jpg")
    assert info.kind == "slice" and info.format == "JPEG"
    assert img.GetSize()[2] == 1 and img.GetDimension() == 3
    rgb = np.stack([np.asarray(Image.open(data_dir / "figshare" / "images" / "1.jpg"))] * 3, -1)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    img2, _ = read_input(tmp_path / "rgb.png")  # an RGB-stored greyscale slice is accepted as grey
    np.testing.assert_allclose(sitk.GetArrayViewFromImage(img2), sitk.GetArrayViewFromImage(img), atol=1.0)


def _junk(path):
    path.write_bytes(b"not an image")
    return path


def _write(tmp_path, arr, name="bad.nii.gz", vector=False, spacing=None):
    img = sitk.GetImageFromArray(arr, isVector=vector)
    if spacing:
        img.SetSpacing(spacing)
    path = tmp_path / name
    sitk.WriteImage(img, str(path))
    return path


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda t: t / "missing.nii.gz", "not found"),
        (lambda t: _junk(t / "junk.nii.gz"), "cannot read"),
        (lambda t: _write(t, np.random.rand(3, 40, 64, 64).astype(np.float32)), "4D"),
        (lambda t: _write(t, np.random.rand(40, 64, 64, 3).astype(np.float32), vector=True), "RGB"),
        (lambda t: _write(t, np.zeros((40, 64, 64), np.float32)), "constant"),
        (lambda t: _write(t, np.full((40, 64, 64), np.nan, np.float32), "nan.mha"), "no finite voxel"),
        (lambda t: _write(t, np.random.rand(10, 12, 12).astype(np.float32)), "too small"),
        (lambda t: _write(t, np.random.rand(40, 64, 64).astype(np.float32), spacing=(0.5, 0.5, 0.5)), "too small"),
    ],
    ids=["missing", "unreadable", "4d", "rgb-volume", "constant", "nan", "few-voxels", "tiny-extent"],
)
def test_bad_inputs_give_one_clear_line(tmp_path, make, words):
    with pytest.raises(BrainXAIError) as err:
        read_input(make(tmp_path))
    message = str(err.value)
    assert words in message and "\n" not in message
