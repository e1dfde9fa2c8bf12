"""Explain stage on real validation tumour slices with the shipped model."""

import numpy as np
import pytest

from brainxai import CLASSES
from brainxai.lab.datasets import block_split, figshare_samples, load_gray
from brainxai.errors import BrainXAIError
from brainxai.explain import METHODS, get_method
from brainxai.model import predict_slices
from brainxai.preprocess import prepare_slice


@pytest.fixture(scope="module")
def tumour_slices(data_dir, model):
    _, val = block_split(figshare_samples(data_dir / "figshare"))
    picked = val[:: max(len(val) // 6, 1)][:6]  # spread over the three classes' validation blocks
    pairs = [prepare_slice(load_gray(s.image), model.cfg.input_size, load_gray(s.mask) > 127) for s in picked]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]), [CLASSES.index(s.label) for s in picked]


@pytest.mark.parametrize("name", METHODS)
def test_cam_maps_are_normalised_and_point_at_tumour(model, tumour_slices, name):
    images, masks, labels = tumour_slices
    # each slice explained for its own tumour class, as `evaluate` scores CAMs (a glioma map of a pituitary slice
    # need not point at the pituitary tumour)
    cams = np.concatenate([get_method(name)(model, images[i : i + 1], labels[i]) for i in range(len(images))])
    assert cams.shape == images.shape and cams.min() >= 0 and cams.max() <= 1 + 1e-6
    if get_method(name).level is None:  # mincam's map is a mask probability, not rescaled
        assert all(c.max() > 0.99 for c in cams), "each slice's map is scaled to [0, 1]"
    # Where the map is hottest vs where the tumour is: the map must not be uniform or random.
    hot = [float(c[m].mean()) for c, m in zip(cams, masks)]
    cold = [float(c[~m].mean()) for c, m in zip(cams, masks)]
    assert np.mean(hot) > np.mean(cold), (hot, cold)


def test_methods_differ(model, tumour_slices):
    images, _, _ = tumour_slices
    a = get_method("gradcam")(model, images[:2], 0)
    b = get_method("gradcam++")(model, images[:2], 0)
    assert not np.allclose(a, b)


def test_unknown_method():
    with pytest.raises(BrainXAIError, match="unknown explanation method"):
        get_method("lime")


def _library_maps(model, cam_class, images, target):
    """pytorch-grad-cam run the way its README shows: on the network, its own forward and backward."""
    import contextlib
    import io

    import torch
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    view = model.classifier()
    with cam_class(model=view, target_layers=[view.target_layer()]) as cam, contextlib.redirect_stderr(io.StringIO()):
        return cam(input_tensor=torch.from_numpy(images[:, None].astype(np.float32)),
                   targets=[ClassifierOutputTarget(target)] * len(images))


@pytest.mark.parametrize("name", ["gradcam", "gradcam++"])
def test_gradient_methods_on_shared_features_equal_the_library_on_the_network(model, tumour_slices, name):
    """The maps from the model stage's features (head-only backward) are pytorch-grad-cam's own maps."""
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus

    images, _, _ = tumour_slices
    expected = _library_maps(model, {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus}[name], images, 1)
    _, _, features = predict_slices(model, images, keep_features=True)
    np.testing.assert_allclose(get_method(name)(model, images, 1, features=features), expected, atol=1e-4)
    np.testing.assert_allclose(get_method(name)(model, images, 1), expected, atol=1e-4)  # features computed here


def test_scorecam_with_every_channel_is_the_library_scorecam(model, tumour_slices, monkeypatch):
    from pytorch_grad_cam import ScoreCAM

    from brainxai.explain.scorecam import SelectiveScoreCAM

    images, _, _ = tumour_slices
    monkeypatch.setattr(SelectiveScoreCAM, "channels", None)
    np.testing.assert_allclose(get_method("scorecam")(model, images[:1], 0), _library_maps(model, ScoreCAM, images[:1], 0),
                               atol=1e-4)


def test_scorecam_scores_only_the_most_varying_channels(model, tumour_slices):
    import torch
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from brainxai.explain.scorecam import CHANNELS, SelectiveScoreCAM
    from brainxai.model import head_features

    images, _, _ = tumour_slices
    features = head_features(model, images[:2])
    view = model.classifier()
    calls = []
    view.register_forward_hook(lambda _m, inp, _o: calls.append(len(inp[0])))
    cam = SelectiveScoreCAM(model=view, target_layers=[view.target_layer()])
    weights = cam.get_cam_weights(torch.from_numpy(images[:2, None]), None, [ClassifierOutputTarget(0)] * 2,
                                  features, None)
    assert sum(calls) == 2 * CHANNELS  # one masked input per chosen channel, nothing else
    for w, f in zip(weights, features):
        chosen = np.argsort(-f.reshape(len(f), -1).var(1))[:CHANNELS]
        assert set(np.nonzero(w)[0]) <= set(chosen) and np.isclose(w.sum(), 1.0, atol=1e-5)


def test_model_stage_features_are_what_the_head_pools(model, tumour_slices):
    from brainxai.model import head_features

    images, _, _ = tumour_slices
    _, _, kept = predict_slices(model, images, batch_size=4, keep_features=True)
    np.testing.assert_allclose(kept, head_features(model, images), atol=1e-4)
