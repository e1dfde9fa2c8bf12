"""Faithfulness: the counterfactual (a map's region inpainted, the call asked again) and how reports may state it."""

import numpy as np
import pytest

import helpers
from brainxai import CLASSES, faithfulness
from brainxai.reporting.report import build_report, render_markdown
from brainxai.reporting.verify import verify


def _blob_slices(n=3, size=64):
    yy, xx = np.mgrid[:size, :size]
    rng = np.random.default_rng(0)
    base = (0.3 + 0.002 * xx + 0.02 * rng.standard_normal((n, size, size))).astype(np.float32)
    blob = (yy - 30) ** 2 + (xx - 34) ** 2 < 8 ** 2
    slices = base.copy()
    slices[:, blob] = 0.95  # a bright "lesion"
    return base, slices, np.broadcast_to(np.hypot(yy - 30, xx - 34) < 11, slices.shape)


def test_inpaint_removes_what_the_mask_covers_and_nothing_else():
    base, slices, mask = _blob_slices()
    out = faithfulness.inpaint(slices, mask)
    assert out.dtype == np.float32 and out.shape == slices.shape
    np.testing.assert_array_equal(out[~mask], slices[~mask])  # outside the mask: untouched
    inside = out[mask]
    assert inside.max() < 0.5, "lesion intensity leaked into the fill"
    assert abs(inside.mean() - base[mask].mean()) < 0.05  # the surrounding tissue's level


def test_inpaint_survives_a_mask_that_covers_everything_or_nothing():
    _, slices, _ = _blob_slices()
    np.testing.assert_array_equal(faithfulness.inpaint(slices, np.zeros(slices.shape, bool)), slices)
    full = faithfulness.inpaint(slices, np.ones(slices.shape, bool))
    assert np.isfinite(full).all()


def test_the_counterfactual_entry_is_the_vote_it_was_given():
    cf = faithfulness.counterfactual(np.array([0.2, 0.1, 0.05, 0.65]), CLASSES, 90)
    assert cf == {"edit": "inpainted", "threshold_percentile": 90.0, "label": "no_tumor",
                  "probabilities": {"glioma": 0.2, "meningioma": 0.1, "pituitary": 0.05, "no_tumor": 0.65}}


def test_the_classifier_alone_gives_the_probabilities_of_the_full_network(model):
    """The counterfactual asks only the layers the class score depends on: same answer as the model stage."""
    from brainxai.model import predict_classes, predict_slices

    _, slices, _ = _blob_slices(4, model.cfg.input_size)
    full, _ = predict_slices(model, slices, 2)
    np.testing.assert_allclose(predict_classes(model, slices, 2), full, atol=1e-5)


def test_the_builtin_writer_states_each_counterfactual():
    f = helpers.counterfactual_case()
    md = render_markdown(build_report(f), f)
    assert "Without the Grad-CAM region, inpainted from the surrounding tissue, the model predicts no tumour (p = 0.71)" in md
    assert "Without the Grad-CAM++ region, inpainted from the surrounding tissue, the model still predicts glioma (p = 0.60, from 0.93)" in md
    assert "at the analysis threshold (percentile 90.0; not recomputed at 95.0)" in md  # Score-CAM, re-thresholded
    assert verify(f, md).ok


@pytest.mark.parametrize("text, ok", [
    ("Without the Grad-CAM region the model predicts no tumour (p = 0.71).", True),
    ("Without the Grad-CAM region the model predicts meningioma.", False),
    ("Without the Grad-CAM region the model predicts no tumour (p = 0.93).", False),
    ("Without the Grad-CAM++ region the model still predicts glioma (p = 0.60).", True),
    ("Without the Grad-CAM++ region the model predicts no tumour.", False),  # Grad-CAM's does, not Grad-CAM++'s
    ("Without the Grad-CAM++ region the model no longer predicts glioma.", False),
    ("Without the Grad-CAM region the model no longer predicts glioma.", True),
    ("Removing the Grad-CAM region changes the call from glioma to no tumour.", True),
    ("Removing the Grad-CAM region changes the call from meningioma to no tumour.", False),  # it was glioma
    ("Once the Grad-CAM region is inpainted, glioma p = 0.22.", True),
    ("Once the Grad-CAM region is inpainted, glioma p = 0.35.", False),
    ("Once the Grad-CAM region is inpainted, the glioma probability falls to 22%.", True),
    ("Without the highlighted region the model predicts no tumour.", True),  # some method's counterfactual says so
    ("Without the highlighted region the model predicts pituitary tumour.", False),
    ("Without the Grad-CAM++ region in the right putamen, the model still predicts glioma.", True),
    ("Without the Grad-CAM++ region in the left putamen, the model still predicts glioma.", False),
    ("Glioma (p = 0.93).", True),  # not a counterfactual statement: the diagnosis as before
])
def test_counterfactual_statements_are_checked_against_the_counterfactual(text, ok):
    result = verify(helpers.counterfactual_case(), text)
    assert result.ok is ok, result.summary()


def test_a_counterfactual_the_findings_do_not_hold_is_unsupported():
    result = verify(helpers.glioma_case(), "Without the highlighted region the model would predict no tumour.")
    assert not result.ok and "no counterfactual" in result.unsupported[0].reason


def _randomised(model):
    """The model with every layer re-initialised (Adebayo et al. 2018's model-randomisation test)."""
    import copy

    import torch

    twin = copy.deepcopy(model)
    twin._fast = None
    torch.manual_seed(0)
    for module in twin.net.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    return twin.net.eval() and twin


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "scorecam"])
def test_maps_of_a_randomised_model_differ_from_the_trained_models(model, method):
    """A map that survives randomising the weights shows the image, not what the model learnt (Adebayo et al.
    2018): mean Spearman rank correlation with the randomised model's map < 0.2, inside the head. Outside it the
    input is flat and both maps are near-ties whose ranks are numerical noise (the whole-slice correlation swings
    between -0.8 and +0.6 from run to run)."""
    from scipy.stats import spearmanr

    from brainxai import preprocess
    from brainxai.explain import get_method
    from brainxai.phantom import make_phantom

    *_, slices = preprocess.model_slices(make_phantom(), model.cfg.input_size)
    brainy = np.argsort(-(slices > 0.1).sum((1, 2)))[:6]  # the slices with the most head in them
    x = slices[np.sort(brainy)]
    head = x > 0.1
    cam = get_method(method)
    trained, random = cam(model, x, 0), cam(_randomised(model), x, 0)
    rho = [spearmanr(a[h], b[h]).statistic for a, b, h in zip(trained, random, head)]
    assert np.nanmean(rho) < 0.2, np.round(rho, 2)
    assert trained[head].std() > 0.05  # the trained model's maps are not flat


def test_keep_only_keeps_the_mask_and_blurs_the_rest():
    _, slices, mask = _blob_slices()
    out = faithfulness.keep_only(slices, mask)
    np.testing.assert_allclose(out[mask], slices[mask], atol=1e-6)
    assert np.abs(out[~mask] - slices[~mask]).mean() > 0.005  # the noise outside is smoothed away
