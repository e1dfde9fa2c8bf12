"""Preprocess stage: orientation is a pure permutation/flip that round-trips exactly; the square frame inverts."""

import numpy as np
import pytest
import SimpleITK as sitk

from brainxai import preprocess
from helpers import flipped_copy, oblique_copy


@pytest.fixture(scope="module")
def brats(brats_path):
    return sitk.ReadImage(str(brats_path), sitk.sitkFloat32)


def test_flipped_copy_is_same_physical_image(brats):
    flip = flipped_copy(brats, 0)
    back = sitk.Resample(flip, brats, sitk.Transform(), sitk.sitkNearestNeighbor)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(back), sitk.GetArrayViewFromImage(brats))


@pytest.mark.parametrize("make", [lambda i: i, lambda i: flipped_copy(i, 0), lambda i: flipped_copy(i, 2), oblique_copy])
def test_orientation_round_trip_is_exact(brats, make):
    img = make(brats)
    oriented = preprocess.orient_for_model(img)
    back = preprocess.restore_orientation(oriented, img)
    assert back.GetSize() == img.GetSize()
    assert back.GetOrigin() == img.GetOrigin() and back.GetDirection() == img.GetDirection()
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(back), sitk.GetArrayViewFromImage(img))


def test_flipped_inputs_give_the_same_model_view(brats):
    a = sitk.GetArrayFromImage(preprocess.orient_for_model(brats))
    for axis in (0, 1, 2):
        b = sitk.GetArrayFromImage(preprocess.orient_for_model(flipped_copy(brats, axis)))
        np.testing.assert_array_equal(a, b)


def test_model_view_is_radiological(brats):
    """Rows run anterior->posterior and columns patient right->left: check with physical points."""
    o = preprocess.orient_for_model(oblique_copy(brats, 10))
    p00 = np.array(o.TransformIndexToPhysicalPoint((0, 0, 0)))
    assert o.TransformIndexToPhysicalPoint((1, 0, 0))[0] > p00[0]  # +i goes to patient left (+x in LPS)
    assert o.TransformIndexToPhysicalPoint((0, 1, 0))[1] > p00[1]  # +j goes posterior (+y in LPS)


def test_square_frame_inverts():
    rng = np.random.default_rng(0)
    stack = np.zeros((3, 150, 230), np.float32)
    stack[:, 20:130, 30:200] = rng.random((3, 110, 170))
    frame = preprocess.head_frame(stack > 0, 192)
    small = preprocess.to_model(stack, frame)
    assert small.shape == (3, 192, 192)
    big = preprocess.from_model(small, frame)
    assert big.shape == stack.shape
    # A blob placed in model space lands where the same tissue is in the original.
    blob = np.zeros((1, 192, 192), np.float32)
    blob[0, 90:100, 90:100] = 1
    back = preprocess.from_model(blob, frame)[0]
    r, c = np.argwhere(back > 0.5).mean(0)
    assert abs(r - (frame.r0 + frame.r1) / 2) < 3 and abs(c - (frame.c0 + frame.c1) / 2) < 3
    np.testing.assert_allclose(preprocess.from_model(preprocess.to_model(stack, frame), frame).mean(), stack.mean(), rtol=0.05)


def test_scale_intensity_range():
    arr = np.concatenate([np.zeros(1000), np.linspace(10, 500, 5000), [1e6]]).astype(np.float32)
    out = preprocess.scale_intensity(arr)
    assert out.min() == 0 and out.max() == 1 and np.median(out[1000:-1]) == pytest.approx(0.5, abs=0.05)
