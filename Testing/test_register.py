"""Registration to MNI: real skull-stripped (BraTS) and with-skull (IXI) volumes, oblique and flipped copies."""

import json

import numpy as np
import pytest
import SimpleITK as sitk

from brainxai.mni import register
from brainxai.errors import BrainXAIError
from helpers import flipped_copy as flipped


def oblique(image: sitk.Image, degrees: float, axis: int):
    """The same voxels with direction cosines rotated about the volume centre (a physically tilted head),
    with the rotation and centre used."""
    a = np.deg2rad(degrees)
    c, s = np.cos(a), np.sin(a)
    rot = {0: [[1, 0, 0], [0, c, -s], [0, s, c]], 1: [[c, 0, s], [0, 1, 0], [-s, 0, c]], 2: [[c, -s, 0], [s, c, 0], [0, 0, 1]]}[axis]
    rot = np.asarray(rot)
    centre_idx = (np.asarray(image.GetSize()) - 1) / 2
    centre = np.asarray(image.TransformContinuousIndexToPhysicalPoint(centre_idx.tolist()))
    direction = rot @ np.asarray(image.GetDirection()).reshape(3, 3)
    out = sitk.Image(image)
    out.SetDirection(direction.ravel().tolist())
    out.SetOrigin((centre - direction @ (np.asarray(image.GetSpacing()) * centre_idx)).tolist())
    return out, rot, centre


brain_points = register.template_brain_points


def mapped(transform: sitk.Transform, points: np.ndarray) -> np.ndarray:
    return np.array([transform.TransformPoint(p.tolist()) for p in points])


def tilted_copy_error_mm(reg, reg_copy, rot, centre) -> float:
    """Mean distance between where the tilted copy's registration maps the template brain and where the original's
    result lands once tilted with the copy."""
    pts = brain_points()
    expected = centre + (mapped(reg.transform, pts) - centre) @ rot.T
    return float(np.linalg.norm(mapped(reg_copy.transform, pts) - expected, axis=1).mean())


def template_brain() -> np.ndarray:
    return sitk.GetArrayViewFromImage(register.load_mni_template()) > 0


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


@pytest.fixture(scope="module")
def brats(brats_path):
    image = sitk.ReadImage(str(brats_path))
    steps = []
    return image, register.register_to_mni(image, progress=steps.append), steps


@pytest.fixture(scope="module")
def ixi(ixi_path):
    image = sitk.ReadImage(str(ixi_path))
    return image, register.register_to_mni(image)


def test_brats_skull_stripped_converges_and_overlaps_template(brats):
    image, reg, steps = brats
    assert reg.converged, reg.stop_condition
    s = np.linalg.svd(np.asarray(reg.transform.GetMatrix()).reshape(3, 3), compute_uv=False)
    assert np.all((s > 0.6) & (s < 1.6))
    warped = register.to_mni(sitk.Cast(image > 0, sitk.sitkUInt8), reg, "nearest")
    # Measured 0.962; a 6 mm shift of the same result gives 0.92, a 6 degree tilt 0.936.
    assert dice(sitk.GetArrayViewFromImage(warped) > 0, template_brain()) >= 0.945
    assert steps and steps[-1] == 1.0 and all(b >= a for a, b in zip(steps, steps[1:]))
    d = reg.as_dict()
    assert json.loads(json.dumps(d)) == d
    assert set(d) == {"metric", "metric_value", "converged", "iterations", "stop_condition", "template"}


def test_ixi_with_skull_converges_and_matches_template(ixi):
    image, reg = ixi
    assert reg.converged, reg.stop_condition
    # The input has a skull, so compare intensities inside the (eroded) template brain instead of masks.
    inner = sitk.GetArrayFromImage(sitk.BinaryErode(register.load_mni_template() > 0, [3, 3, 3])) > 0
    tpl = sitk.GetArrayViewFromImage(register.load_mni_template())[inner]

    def corr(transform):
        warped = sitk.Resample(sitk.Cast(image, sitk.sitkFloat32), register.load_mni_template(), transform, sitk.sitkLinear, 0.0)
        return np.corrcoef(sitk.GetArrayViewFromImage(warped)[inner], tpl)[0, 1]

    ours = corr(reg.transform)
    shifted = corr(sitk.CompositeTransform([reg.transform, sitk.TranslationTransform(3, (0.0, 0.0, 6.0))]))
    # Measured 0.342; the same result shifted 6 mm gives 0.20, tilted 6 degrees 0.26, scaled 8 % 0.24.
    assert ours >= 0.30
    assert ours > shifted + 0.08


def test_flipped_copy_gives_the_same_mni_image(brats):
    image, reg, _ = brats
    copy = flipped(image, 0)  # a left-handed index frame (direction determinant -1)
    reg_copy = register.register_to_mni(copy)
    assert reg_copy.converged, reg_copy.stop_condition
    pts = brain_points()
    assert np.linalg.norm(mapped(reg.transform, pts) - mapped(reg_copy.transform, pts), axis=1).mean() < 1.0
    brain = template_brain()
    a = sitk.GetArrayFromImage(register.to_mni(image, reg))[brain]
    b = sitk.GetArrayFromImage(register.to_mni(copy, reg_copy))[brain]
    assert np.corrcoef(a, b)[0, 1] > 0.95


def test_oblique_copy_gives_the_same_mni_image(ixi):
    image, reg = ixi
    copy, rot, centre = oblique(image, 15.0, 0)  # head pitched 15 degrees
    reg_copy = register.register_to_mni(copy)
    assert reg_copy.converged, reg_copy.stop_condition
    assert tilted_copy_error_mm(reg, reg_copy, rot, centre) < 1.5
    brain = template_brain()
    a = sitk.GetArrayFromImage(register.to_mni(image, reg))[brain]
    b = sitk.GetArrayFromImage(register.to_mni(copy, reg_copy))[brain]
    assert np.corrcoef(a, b)[0, 1] > 0.95


def test_yawed_skull_stripped_copy_lands_where_the_original_does(brats):
    """BraTS turned 20 degrees about the vertical axis: with every level refined to 0.01 mm the coarse levels
    drifted into a wrong optimum 38 mm away, still reporting convergence."""
    image, reg, _ = brats
    copy, rot, centre = oblique(image, -20.0, 1)
    reg_copy = register.register_to_mni(copy)
    assert reg_copy.converged, reg_copy.stop_condition
    assert tilted_copy_error_mm(reg, reg_copy, rot, centre) < 1.5


def test_labels_stay_labels_and_transform_round_trips(brats, tmp_path):
    image, reg, _ = brats
    arr = np.zeros(sitk.GetArrayViewFromImage(image).shape, np.uint8)
    arr[40:80, 80:130, 130:180] = 1
    arr[60:70, 100:110, 150:160] = 4
    labels = sitk.GetImageFromArray(arr)
    labels.CopyInformation(image)
    out = register.to_mni(labels, reg, "nearest")
    assert out.GetPixelID() == sitk.sitkUInt8
    assert set(np.unique(sitk.GetArrayViewFromImage(out))) == {0, 1, 4}
    tpl = register.load_mni_template()
    assert out.GetSize() == tpl.GetSize() and out.GetOrigin() == tpl.GetOrigin() and out.GetDirection() == tpl.GetDirection()
    assert register.to_mni(labels, reg).GetPixelID() == sitk.sitkFloat32
    path = tmp_path / "to_mni.tfm"
    register.save_transform(reg, path)
    back = sitk.ReadTransform(str(path))
    pts = brain_points(12)
    assert np.allclose(mapped(back, pts), mapped(reg.transform, pts), atol=1e-4)


def test_noise_is_not_reported_as_converged():
    rng = np.random.default_rng(0)
    noise = sitk.GetImageFromArray(rng.random((80, 80, 80), dtype=np.float32))
    noise.SetSpacing((2.5, 2.5, 2.5))
    noise.SetOrigin((-100.0, -100.0, -100.0))
    reg = register.register_to_mni(noise)
    assert not reg.converged
    assert "mutual information" in reg.stop_condition


def test_cancel_and_bad_input(brats):
    image, _, _ = brats
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 5

    with pytest.raises(BrainXAIError, match="cancelled"):
        register.register_to_mni(image, cancel=cancel)
    assert len(calls) < 50  # stopped promptly, not after the whole registration
    with pytest.raises(BrainXAIError):
        register.register_to_mni(sitk.Image([64, 64, 64], sitk.sitkFloat32))  # all zero
    with pytest.raises(BrainXAIError):
        register.register_to_mni(sitk.Image([64, 64], sitk.sitkFloat32))


def test_brain_region_covers_the_brain_and_not_the_neck(brats, ixi):
    """The MNI brain carried back onto the scan: all of the skull-stripped BraTS brain is inside it; in the IXI
    head it excludes the neck and face slices that the model never saw in training."""
    image, reg, _ = brats
    region = sitk.GetArrayFromImage(register.brain_region(image, reg)) > 0
    brain = sitk.GetArrayFromImage(image) > 0
    assert (region & brain).sum() / brain.sum() > 0.98
    # mL: the MNI brain dilated by 10 mm is ~2.6 L (measured 2.59-2.60 L); the field of view is 8.9 L. The bound
    # separates the two with margin (the old 2600 was too tight: the probe speed-up moved scale by 0.01, 2601 mL).
    assert region.sum() * np.prod(image.GetSpacing()) / 1000 < 3000
    image, reg = ixi
    from brainxai.preprocess import orient_for_model

    oriented = orient_for_model(image)  # array[k] axial, k from inferior to superior
    region = sitk.GetArrayFromImage(register.brain_region(oriented, reg)) > 0
    head = sitk.GetArrayFromImage(oriented) > 0.05 * np.percentile(sitk.GetArrayFromImage(oriented), 99.5)
    with_head = np.nonzero(head.any((1, 2)))[0]
    lowest = with_head[: len(with_head) // 5]  # the lowest fifth of the head: neck and face
    assert not region[lowest].any()
    assert region.any((1, 2)).sum() > 0.5 * len(with_head)


def test_cached_template_pyramid_equals_a_fresh_computation():
    """Each level the registration uses comes from the user's cache; it must be exactly what the template gives."""
    fresh = register._build_template_arrays()
    for shrink, (fixed, mask) in register._template_pyramid().items():
        np.testing.assert_array_equal(sitk.GetArrayViewFromImage(fixed), fresh[f"fixed{shrink}"])
        np.testing.assert_array_equal(sitk.GetArrayViewFromImage(mask), fresh[f"mask{shrink}"])
        g = fresh[f"geometry{shrink}"]
        assert np.allclose([*fixed.GetOrigin(), *fixed.GetSpacing(), *fixed.GetDirection()], g)
        assert fixed.GetSize() == mask.GetSize() and fixed.GetOrigin() == mask.GetOrigin()
    # The 1 mm level is the template itself, its mask the dilated template brain.
    level1 = register._template_pyramid()[1][0]
    assert level1.GetSize() == register.load_mni_template().GetSize()
    assert level1.GetOrigin() == register.load_mni_template().GetOrigin()
    # So is the dilated brain that brain_region carries onto scans.
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(register._dilated_brain()), fresh["brain_dilated"])
