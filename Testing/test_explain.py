"""Explain stage on real validation tumour slices with the shipped model."""

import numpy as np
import pytest

from brainxai.data import block_split, figshare_samples, load_gray
from brainxai.errors import BrainXAIError
from brainxai.explain import METHODS, get_method
from brainxai.model import load_model, predict_slices
from brainxai.preprocess import prepare_slice


@pytest.fixture(scope="module")
def model():
    return load_model()


@pytest.fixture(scope="module")
def tumour_slices(data_dir, model):
    _, val = block_split(figshare_samples(data_dir / "figshare"))
    picked = val[:: max(len(val) // 6, 1)][:6]  # spread over the three classes' validation blocks
    pairs = [prepare_slice(load_gray(s.image), model.cfg.input_size, load_gray(s.mask) > 127) for s in picked]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


@pytest.mark.parametrize("name", METHODS)
def test_cam_maps_are_normalised_and_point_at_tumour(model, tumour_slices, name):
    images, masks = tumour_slices
    probs, _ = predict_slices(model, images)
    target = int(np.bincount(probs.argmax(1), minlength=4)[:3].argmax())
    cams = get_method(name)(model, images, target)
    assert cams.shape == images.shape and cams.min() >= 0 and cams.max() <= 1 + 1e-6
    assert all(c.max() > 0.99 for c in cams), "pytorch-grad-cam scales each slice to [0, 1]"
    # Where the map is hottest vs where the tumour is: the map must not be uniform or random.
    hot = [float(c[m].mean()) for c, m in zip(cams, masks)]
    cold = [float(c[~m].mean()) for c, m in zip(cams, masks)]
    assert np.mean(hot) > np.mean(cold), (hot, cold)


def test_methods_differ(model, tumour_slices):
    images, _ = tumour_slices
    a = get_method("gradcam")(model, images[:2], 0)
    b = get_method("gradcam++")(model, images[:2], 0)
    assert not np.allclose(a, b)


def test_unknown_method():
    with pytest.raises(BrainXAIError, match="unknown explanation method"):
        get_method("lime")
