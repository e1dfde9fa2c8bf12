"""Load stage integrity: what SimpleITK's readers forgive (truncation, NaN/Inf, missing geometry, shear) is refused or
repaired with a warning that says what was done. Every file is generated here."""

import gzip
import struct

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from brainxai.errors import BrainXAIError
from brainxai.load import read_input

SHAPE = (64, 64, 40)  # x, y, z as nibabel stores it


def _head(seed=0):
    """Tissue-like values in an ellipsoid, air (0) around it: what the not-an-MRI checks accept."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in SHAPE], indexing="ij")
    inside = x**2 + y**2 + z**2 < 0.8
    return np.where(inside, rng.random(SHAPE) * 100 + 10, 0).astype(np.float32)


def _nifti(path, data=None, affine=None):
    img = nib.Nifti1Image(_head() if data is None else data, np.diag([2.0, 2.0, 3.0, 1.0]) if affine is None else affine)
    nib.save(img, str(path))
    return path


def _patched(tmp_path, name, fmt, offset, *values):
    """A NIfTI written by nibabel, then one header field overwritten (nibabel itself would repair it)."""
    raw = bytearray((_nifti(tmp_path / "clean.nii")).read_bytes())
    struct.pack_into(fmt, raw, offset, *values)
    path = tmp_path / name
    path.write_bytes(gzip.compress(bytes(raw)) if name.endswith(".gz") else bytes(raw))
    return path


def _one_line_error(path, words, **kw):
    with pytest.raises(BrainXAIError) as err:
        read_input(path, **kw)
    message = str(err.value)
    assert all(w in message for w in words) and "\n" not in message, message
    return message


def test_truncated_compressed_file_is_an_error(tmp_path):
    raw = _nifti(tmp_path / "full.nii.gz").read_bytes()
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(raw[: len(raw) // 3])  # SimpleITK alone reads this, padding two thirds with zeros
    assert sitk.ReadImage(str(cut)).GetSize() == SHAPE
    _one_line_error(cut, ["cut.nii.gz", "truncated or corrupt", "copy the file again"])


def test_truncated_uncompressed_file_is_an_error(tmp_path):
    raw = _nifti(tmp_path / "full.nii").read_bytes()
    cut = tmp_path / "cut.nii"
    cut.write_bytes(raw[: len(raw) - 1000])
    _one_line_error(cut, ["truncated", "of the 655,360 bytes"])


def test_corrupt_compressed_data_is_an_error(tmp_path):
    raw = bytearray(_nifti(tmp_path / "full.nii.gz").read_bytes())
    raw[len(raw) // 2: len(raw) // 2 + 64] = bytes(64)
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(bytes(raw))
    _one_line_error(bad, ["truncated or corrupt"])


def test_nan_block_is_masked_with_a_counted_warning(tmp_path):
    data = _head()
    data[27:37, 27:37, 15:25] = np.nan  # 1,000 voxels: SimpleITK turns them into 0 without a word
    img, info = read_input(_nifti(tmp_path / "nan.nii.gz", data))
    arr = sitk.GetArrayViewFromImage(img)
    assert np.isfinite(arr).all() and (arr[15:25, 27:37, 27:37] == 0).all()
    assert len(info.warnings) == 1 and "1,000 voxels" in info.warnings[0] and "NaN or infinite" in info.warnings[0]


def test_one_infinite_voxel_is_counted(tmp_path):
    data = _head()
    data[5, 6, 7] = np.inf
    _, info = read_input(_nifti(tmp_path / "inf.nii", data))
    assert info.warnings == ("Input file: 1 voxel was NaN or infinite: set to 0, so counted as background.",)


def test_nan_in_other_formats_is_masked_too(tmp_path):
    arr = _head().T.copy()
    arr[:5] = np.nan
    path = tmp_path / "nan.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(path))
    img, info = read_input(path)
    assert np.isfinite(sitk.GetArrayViewFromImage(img)).all() and "20,480 voxels" in info.warnings[0]


def test_all_nan_is_an_error(tmp_path):
    _one_line_error(_nifti(tmp_path / "void.nii.gz", np.full(SHAPE, np.nan, np.float32)), ["no finite voxel"])


@pytest.mark.parametrize("values, words", [((0.0, 0.0, 0.0), "[0.0, 0.0, 0.0]"), ((2.0, -2.0, 3.0), "-2.0")],
                         ids=["zero", "negative"])
def test_degenerate_voxel_size_needs_the_override(tmp_path, values, words):
    path = _patched(tmp_path, "size.nii.gz", "<3f", 80, *values)  # pixdim[1:4]
    _one_line_error(path, ["voxel size", words, "--assume-geometry"])
    img, info = read_input(path, assume_geometry=True)
    assert img.GetSize() == SHAPE and "--assume-geometry" in info.warnings[0] and "left/right" in info.warnings[0]


def test_missing_orientation_needs_the_override(tmp_path):
    path = _patched(tmp_path, "noorient.nii", "<2h", 252, 0, 0)  # qform_code, sform_code
    _one_line_error(path, ["no orientation", "--assume-geometry"])
    _, info = read_input(path, assume_geometry=True)
    assert "no orientation" in info.warnings[0]


def test_huge_header_is_refused_before_reading(tmp_path):
    path = _patched(tmp_path, "huge.nii", "<4h", 40, 3, 30000, 30000, 30000)  # dim[0:4]
    _one_line_error(path, ["30000x30000x30000", "GiB", "not read"])


def test_sheared_grid_is_resampled_in_place(tmp_path):
    """A sheared sform (ITK refuses it) is resampled onto an orthogonal grid; a bright voxel stays at its RAS point."""
    affine = np.array([[2.0, 0.6, 0.0, -60.0], [0.0, 2.0, 0.0, -70.0], [0.0, 0.3, 3.0, -50.0], [0, 0, 0, 1]])
    data = np.zeros(SHAPE, np.float32)
    data[20:40, 20:40, 10:30] = 10.0  # a head-sized block, so the input passes the size checks
    ijk = (31, 22, 17)
    data[ijk[0] - 1: ijk[0] + 2, ijk[1] - 1: ijk[1] + 2, ijk[2] - 1: ijk[2] + 2] = 1000.0
    path = tmp_path / "sheared.nii.gz"
    _nifti(path, data, affine)
    with pytest.raises(RuntimeError, match="orthonormal"):
        sitk.ReadImage(str(path))
    img, info = read_input(path)
    assert "sheared" in info.warnings[0] and "resampled" in info.warnings[0]
    arr = sitk.GetArrayViewFromImage(img)
    bright = np.argwhere(arr > 300)[:, ::-1]  # (x, y, z) indices of the resampled bright cube
    lps = np.array([img.TransformContinuousIndexToPhysicalPoint(tuple(float(i) for i in b)) for b in bright])
    weights = arr[tuple(bright[:, ::-1].T)]
    centre_ras = (lps * [-1, -1, 1] * weights[:, None]).sum(0) / weights.sum()
    expected_ras = (affine @ np.array([*ijk, 1.0]))[:3]
    assert np.linalg.norm(centre_ras - expected_ras) < 1.0, (centre_ras, expected_ras)
    direction = np.array(img.GetDirection()).reshape(3, 3)
    np.testing.assert_allclose(direction.T @ direction, np.eye(3), atol=1e-6)


def test_real_shared_volumes_raise_no_integrity_warning(data_dir):
    """No false alarms: every real NIfTI in the shared data reads without an integrity warning or error."""
    from brainxai.load import _check_nifti

    files = sorted((data_dir / "volumes").rglob("*.nii*"))
    assert len(files) >= 20
    flagged = {p.name: _check_nifti(p, False) for p in files}
    assert all(notes == [] and not sheared for notes, sheared in flagged.values()), flagged


def _volume(tmp_path, arr, name):
    path = tmp_path / name
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((1.0, 1.0, 2.0))
    sitk.WriteImage(img, str(path))
    return path


def test_label_map_is_not_an_mri(tmp_path):
    labels = np.zeros((60, 128, 128), np.uint8)
    labels[20:40, 30:90, 30:90] = 1
    labels[25:35, 50:70, 50:70] = 2
    _one_line_error(_volume(tmp_path, labels, "seg.nii.gz"), ["3 distinct integer values (0, 1, 2)", "label map or segmentation"])


def test_binary_image_of_int16_extremes_is_not_an_mri(tmp_path):
    rng = np.random.default_rng(0)
    arr = np.where(rng.random((60, 128, 128)) > 0.5, 32767, -32768).astype(np.int16)
    _one_line_error(_volume(tmp_path, arr, "binary.nrrd"), ["2 distinct integer values"])


def test_ct_in_hounsfield_units_is_not_an_mri(tmp_path):
    rng = np.random.default_rng(0)
    ct = np.full((60, 128, 128), -1000.0, np.float32) + rng.normal(0, 20, (60, 128, 128))  # air
    ct[10:50, 20:108, 20:108] = 40 + rng.normal(0, 10, (40, 88, 88))  # soft tissue
    ct[10:50, 20:24, 20:108] = 1200  # bone
    _one_line_error(_volume(tmp_path, ct.astype(np.int16), "ct.nii.gz"), ["Hounsfield", "CT"])


def test_mri_with_padding_outside_its_field_of_view_is_accepted(tmp_path):
    """A large negative padding value (oblique reconstructions use -32768) is not air in HU."""
    rng = np.random.default_rng(0)
    mri = (rng.random((60, 128, 128)) * 800).astype(np.int16)
    mri[:, :, :20] = -32768
    img, info = read_input(_volume(tmp_path, mri, "padded.nii.gz"))
    assert info.warnings == () and img.GetSize() == (128, 128, 60)


def test_colour_photograph_is_not_an_mri_slice(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    path = tmp_path / "photo.jpg"
    Image.fromarray(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)).save(path)
    _one_line_error(path, ["colour image", "greyscale"])


def test_greyscale_slices_stored_as_rgb_jpeg_pass_the_colour_check(data_dir):
    """No false alarms: Br35H stores some slices as RGB JPEGs; every one of a sample reads as grey."""
    files = sorted((data_dir / "br35h_no_tumor").glob("*.jp*g"))[::10]
    assert len(files) >= 50
    for path in files:
        read_input(path)


def _linear_series(folder, tilt_mm=0.0, uid="1.2.826.0.1.3680043.2.1125.77"):
    """A DICOM series whose every pixel holds a linear function of its own LPS position (so trilinear resampling
    reproduces it exactly): where a voxel ends up can be read from its value."""
    from bad_inputs import _dicom_series

    sp, n, size = (2.0, 1.6, 3.0), 24, 80
    j, i = np.mgrid[:size, :size]
    head = (i - size / 2) ** 2 + (j - size / 2) ** 2 < (0.4 * size) ** 2  # with background around it, as a scan has
    vol = np.stack([head * (3 * (-90 + i * sp[0]) + 2 * (-110 + k * tilt_mm + j * sp[1]) + 5 * (k * sp[2] - 60)
                            + 2000) for k in range(n)])
    return _dicom_series(folder, vol, sp, uid, tilt_mm=tilt_mm), lambda p: 3 * p[0] + 2 * p[1] + 5 * p[2] + 2000


@pytest.mark.parametrize("tilt_degrees", [0.0, 20.0])
def test_a_dicom_voxel_keeps_its_position_with_and_without_gantry_tilt(tmp_path, tilt_degrees):
    folder, value_at = _linear_series(tmp_path / "s", tilt_mm=3.0 * np.tan(np.radians(tilt_degrees)))
    img, info = read_input(folder)
    assert (tilt_degrees > 0) == any("gantry tilt of 20.0 degrees" in w for w in info.warnings)
    from scipy.ndimage import minimum_filter

    arr = sitk.GetArrayFromImage(img)
    inside = np.argwhere(minimum_filter(arr, size=5, mode="constant") > 0)  # away from the background's blend
    errors = [abs(arr[k, j, i] - value_at(img.TransformIndexToPhysicalPoint((int(i), int(j), int(k)))))
              for k, j, i in inside[np.random.default_rng(0).choice(len(inside), 400, replace=False)]]
    assert np.max(errors) < 1.5, np.max(errors)


def test_a_folder_with_two_series_is_refused_unless_one_is_chosen(tmp_path):
    from bad_inputs import _dicom_series

    vol = np.random.default_rng(1).integers(100, 1000, (12, 64, 64))
    vol[:, :8], vol[:, -8:], vol[:, :, :8], vol[:, :, -8:] = 0, 0, 0, 0  # background at the edges, as a scan has
    _dicom_series(tmp_path / "d", vol, (2.0, 2.0, 4.0), "1.2.826.0.1.3680043.2.1125.81", "T1 pre contrast")
    _dicom_series(tmp_path / "d", vol * 2, (2.0, 2.0, 4.0), "1.2.826.0.1.3680043.2.1125.82")
    with pytest.raises(BrainXAIError, match=r"holds 2 DICOM series: .*\.81 \(T1 pre contrast, 12 files\).*--series"):
        read_input(tmp_path / "d")
    img, _ = read_input(tmp_path / "d", series="1.2.826.0.1.3680043.2.1125.82")
    np.testing.assert_allclose(sitk.GetArrayFromImage(img), vol * 2)
    with pytest.raises(BrainXAIError, match="no DICOM series 9.9 in"):
        read_input(tmp_path / "d", series="9.9")
