"""The model-agnostic explainers: minimal-evidence masks (mincam), prototype similarity maps (proto-*), and the
optional enhancement; their fitting, their findings and how reports may state them."""

import numpy as np
import pytest

import helpers
from brainxai import CLASSES, faithfulness, pipeline
from brainxai.errors import BrainXAIError
from brainxai.explain import METHODS, get_method, mincam, prototype
from brainxai.explain.enhance import enhance
from brainxai.model import predict_classes
from brainxai.reporting.findings import validate
from brainxai.reporting.report import build_report, render_markdown
from brainxai.reporting.verify import verify


@pytest.fixture(scope="module")
def val_tumour(data_dir, model):
    """16 validation tumour slices (figshare's validation blocks, never trained on) with their masks and heads."""
    from brainxai.lab.datasets import block_split, figshare_samples, tensorise

    val = block_split(figshare_samples(data_dir / "figshare"))[1]
    t = tensorise(val[:: max(len(val) // 16, 1)][:16], model.cfg.input_size)
    return t["images"].astype(np.float32), t["masks"], t["heads"], t["labels"]


# ------------------------------------------------------------------------------------------------ registry


def test_every_method_is_registered_with_a_title_and_loads():
    for name in METHODS:
        method = get_method(name)
        assert method.name == name and method.title
    assert get_method("mincam").level == mincam.LEVEL
    assert [get_method(n).depth for n in ("proto-early", "proto-middle", "proto-late")] == [3, 4, 5]  # early -> late


def test_the_packaged_explainers_were_fitted_on_the_packaged_weights(model):
    assert mincam.load_predictor(model) is not None
    stored = prototype.load_prototypes(model)
    for depth in prototype.DEPTHS.values():
        for key in (prototype.NORMAL, prototype.TUMOUR, "glioma", "meningioma", "pituitary"):
            p = stored[f"{depth}/{key}"]
            np.testing.assert_allclose(np.linalg.norm(p, axis=1), 1, atol=1e-3)


def test_explainers_fitted_on_other_weights_are_refused_in_one_line(model, tmp_path):
    import copy
    import shutil

    weights = tmp_path / "w.pt"
    shutil.copy(model.path, weights)
    shutil.copy(mincam.predictor_path(model.path), mincam.predictor_path(weights))
    shutil.copy(prototype.prototypes_path(model.path), prototype.prototypes_path(weights))
    other = copy.copy(model)
    other.path, other.sha256 = weights, "0" * 64  # as if the weights had been retrained
    x = np.zeros((1, 224, 224), np.float32)
    for name in ("mincam", "proto-late"):
        with pytest.raises(BrainXAIError, match="fitted on other model weights.*fit-explainers") as err:
            get_method(name)(other, x, 0)
        assert "\n" not in str(err.value)
    (tmp_path / "w.pt").with_name(mincam.PREDICTOR).unlink()
    with pytest.raises(BrainXAIError, match="no minimal-evidence predictor"):
        get_method("mincam")(other, x, 0)


# ------------------------------------------------------------------------------------------------ maps


@pytest.mark.data
def test_minimal_evidence_keeps_the_call_from_a_small_region(model, val_tumour):
    """The cut mask alone (the rest blurred) keeps the model's call on most validation tumour slices, from a small
    share of the head. Regression guards below the issue's targets, which `brainxai evaluate` measures on the whole
    validation split (docs/metrics)."""
    images, _, heads, _ = val_tumour
    call = predict_classes(model, images).argmax(1)
    masks = np.zeros(images.shape, bool)
    for c in np.unique(call):
        sel = call == c
        maps = get_method("mincam")(model, images[sel], int(c))
        assert maps.min() >= 0 and maps.max() <= 1
        masks[sel] = (maps >= mincam.LEVEL) & heads[sel]
    kept = predict_classes(model, faithfulness.keep_only(images, masks)).argmax(1) == call
    blurred = predict_classes(model, faithfulness.keep_only(images, np.zeros_like(masks))).argmax(1) == call
    area = masks.sum((1, 2)) / heads.sum((1, 2))
    assert kept.mean() >= 0.8 and kept.mean() > blurred.mean(), (kept.mean(), blurred.mean())
    assert area.mean() < 0.15, area


@pytest.mark.data
def test_the_optimised_minimal_evidence_keeps_the_call_where_it_can(model, val_tumour):
    """mincam-opt optimises a slice further until its region keeps the call: on validation tumour slices it keeps
    the call at least as often as the predicted mask, from a region still well under a fifth of the head. A guard
    below the measured rate (0.99 on 225 validation slices, docs/metrics): 9 of these 16 are pituitary calls, the
    class whose call least often survives the blur outside a small region (14 of 16 kept when written)."""
    images, _, heads, _ = val_tumour
    call = predict_classes(model, images).argmax(1)
    kept, area = {}, {}
    for name in ("mincam", "mincam-opt"):
        masks = np.zeros(images.shape, bool)
        for c in np.unique(call):
            masks[call == c] = (get_method(name)(model, images[call == c], int(c)) >= mincam.LEVEL) & heads[call == c]
        kept[name] = predict_classes(model, faithfulness.keep_only(images, masks)).argmax(1) == call
        area[name] = (masks.sum((1, 2)) / heads.sum((1, 2))).mean()
    assert kept["mincam-opt"].mean() >= max(kept["mincam"].mean(), 0.85), kept
    assert area["mincam-opt"] < 0.15, area


@pytest.mark.data
def test_a_mask_that_does_not_keep_the_call_is_grown_to_the_smallest_cut_that_does(model, val_tumour):
    """Predicted masks made too small on purpose (logits lowered by 4): `sufficient` shifts each slice's map so
    that the level cuts a region that keeps the call (checked here by the same keep-only edit), no larger than the
    limit, and leaves alone the slices whose mask already kept it. The shift is one constant per slice: the map's
    order is unchanged."""
    import torch

    from brainxai.model import as_batch, head_features

    images, _, heads, _ = val_tumour
    f = torch.from_numpy(head_features(model, images))
    with torch.no_grad():
        call = model.net.classification_head(f).argmax(1)
        low = mincam.mask_logits(mincam.load_predictor(model), model.net, f, call) - 4.0
    grown = mincam.sufficient(model, as_batch(images), low, call, call)

    def cut_keeps(logits):
        masks = (mincam.upsampled(logits, images.shape[-1])[:, 0].numpy() >= mincam.LEVEL) & heads
        kept = predict_classes(model, faithfulness.keep_only(images, masks)).argmax(1) == call.numpy()
        return masks, kept

    (small, kept_before), (masks, kept_after) = cut_keeps(low), cut_keeps(grown)
    shift = (low - grown).flatten(1)
    assert torch.allclose(shift, shift[:, :1].expand_as(shift), atol=1e-4)
    moved = shift[:, 0].abs().numpy() > 1e-6
    assert not moved[kept_before].any()  # already sufficient: untouched
    assert moved.any() and kept_after[moved].all(), (moved, kept_after)
    area = masks.sum((1, 2)) / heads.sum((1, 2))
    assert (area[moved] <= max(mincam.SUFFICIENT_AREAS) + 0.01).all() and (area[moved] > small.sum((1, 2))[moved]
                                                                           / heads.sum((1, 2))[moved]).all()
    assert kept_after.mean() > kept_before.mean()


@pytest.mark.data
@pytest.mark.parametrize("name", ["proto-early", "proto-middle", "proto-late"])
def test_prototype_maps_are_higher_on_the_tumour_than_on_the_rest_of_the_head(model, val_tumour, name):
    images, masks, heads, labels = val_tumour
    maps = np.concatenate([get_method(name)(model, images[i : i + 1], int(labels[i])) for i in range(len(images))])
    assert maps.shape == images.shape and maps.min() >= 0 and maps.max() <= 1 + 1e-6
    higher = [m[t].mean() > m[h & ~t].mean() for m, t, h in zip(maps, masks, heads)]
    assert np.mean(higher) >= 0.75, higher


def test_prototype_depths_share_one_encoder_pass_and_differ(model):
    from brainxai.phantom import make_phantom
    from brainxai import preprocess

    *_, slices = preprocess.model_slices(make_phantom(), model.cfg.input_size)
    x = slices[len(slices) // 2 - 1 : len(slices) // 2 + 1]
    first = prototype.encoder_features(model, x)
    assert prototype.encoder_features(model, x.copy()) is first  # same slices: the pass is reused
    maps = [get_method(n)(model, x, 0) for n in ("proto-early", "proto-middle", "proto-late")]
    assert not np.allclose(maps[0], maps[2])


@pytest.mark.data
def test_prototype_maps_of_a_randomised_network_differ(model, val_tumour):
    """Adebayo et al.'s model-randomisation check for the prototype maps: the same prototypes, read on a
    re-initialised network's features, give maps unrelated to the trained network's (mean Spearman < 0.2 inside the
    head, on validation tumour slices; docs/dev/randomisation_check.py measures 32)."""
    import torch
    from scipy.stats import spearmanr

    from test_faithfulness import _randomised

    images, _, heads, labels = val_tumour
    twin = _randomised(model)
    twin.sha256 = "randomised"  # its own encoder pass, not the cached one of the trained model

    def up(maps):
        t = torch.from_numpy(np.ascontiguousarray(maps[:, None], np.float32))
        return torch.nn.functional.interpolate(t, size=images.shape[1:], mode="bilinear")[:, 0].numpy()

    def rho(a, b):
        return np.nanmean([spearmanr(p[h], q[h]).statistic for p, q, h in zip(a, b, heads)])

    stored = prototype.load_prototypes(model)
    for depth in prototype.DEPTHS.values():
        a, b = (up(np.concatenate([prototype.contrast_map(prototype.encoder_features(m, images)[depth][i : i + 1],
                                                          stored, depth, CLASSES[labels[i]])
                                   for i in range(len(images))])) for m in (model, twin))
        assert rho(a, b) < 0.2, depth


@pytest.mark.data
def test_minimal_evidence_masks_of_a_randomised_network_differ(model, val_tumour):
    """The same check for mincam, with the trained mask predictor read on the re-initialised network's class maps.
    (A predictor that also read the head's features failed it: 0.40, their image structure survives
    re-initialisation.)"""
    import torch

    from brainxai.model import head_features
    from test_faithfulness import _randomised

    images, _, heads, labels = val_tumour
    twin = _randomised(model)
    predictor = mincam.load_predictor(model)
    with torch.no_grad():
        a, b = (mincam.upsampled(mincam.mask_logits(predictor, m.net, torch.from_numpy(head_features(m, images)),
                                                    torch.from_numpy(labels)), images.shape[-1])[:, 0].numpy()
                for m in (model, twin))
    from scipy.stats import spearmanr

    assert a.std() > 0.05  # the trained network's masks are not flat
    assert np.nanmean([spearmanr(p[h], q[h]).statistic for p, q, h in zip(a, b, heads)]) < 0.2


def test_enhancement_spreads_a_narrow_band_and_stays_in_the_region():
    yy, xx = np.mgrid[:64, :64]
    narrow = (0.50 + 0.02 * np.exp(-((yy - 30) ** 2 + (xx - 20) ** 2) / 60.0))[None].astype(np.float32)
    region = np.zeros((1, 64, 64), bool)
    region[:, 8:56, 8:56] = True
    out = enhance(narrow, region)
    assert out.min() >= 0 and out.max() <= 1
    assert np.ptp(out[region]) > 0.8 > np.ptp(narrow[region]) * 10
    assert (out[~region] == 0).all()
    assert out[0, 30, 20] > out[0, 50, 50]  # the peak stays the peak


# ------------------------------------------------------------------------------------------------ fitting


def _tiny_training_set(n=12, size=224):
    rng = np.random.default_rng(0)
    images = (0.2 + 0.05 * rng.standard_normal((n, size, size))).clip(0, 1).astype(np.float16)
    yy, xx = np.mgrid[:size, :size]
    heads = np.broadcast_to((yy - 112) ** 2 + (xx - 112) ** 2 < 90 ** 2, images.shape).copy()
    masks = np.zeros_like(heads)
    labels = np.array([i % 4 for i in range(n)])
    for i in range(n):
        if labels[i] != CLASSES.index("no_tumor"):
            blob = (yy - 80 - 5 * i) ** 2 + (xx - 120) ** 2 < 20 ** 2
            masks[i], images[i][blob] = blob, 0.9
    return {"images": images, "heads": heads, "masks": masks, "labels": labels}


def test_prototypes_fit_save_and_load_beside_the_weights(model, tmp_path, monkeypatch):
    import shutil

    from brainxai.lab import fit_explainers

    monkeypatch.setattr(fit_explainers, "PROTOTYPES_PER_CLASS", 2)
    stored = fit_explainers.fit_prototypes(model, _tiny_training_set(), log=lambda s: None)
    assert {f"{d}/{k}" for d in prototype.DEPTHS.values() for k in ("normal", "tumour", "glioma")} <= set(stored)
    weights = tmp_path / "w.pt"
    shutil.copy(model.path, weights)
    path = fit_explainers.save_prototypes(stored, weights)
    assert path == weights.with_name(prototype.PROTOTYPES) and not list(tmp_path.glob(".*tmp*"))
    twin = type(model)(**{**model.__dict__, "path": weights})
    np.testing.assert_array_equal(prototype.load_prototypes(twin)["5/glioma"], stored["5/glioma"])


def test_the_mask_predictor_trains_checkpoints_and_resumes(model, tmp_path):
    import torch

    from brainxai.lab import fit_explainers

    data = _tiny_training_set()
    ckpt = tmp_path / "ckpt.pt"
    _, summary = fit_explainers.fit_mincam(model, data, steps=2, batch=5, checkpoint=ckpt, log=lambda s: None)
    assert ckpt.is_file() and torch.load(ckpt, weights_only=False)["step"] == 2
    logs = []
    predictor, summary = fit_explainers.fit_mincam(model, data, steps=3, batch=5, checkpoint=ckpt, log=logs.append)
    assert logs[0] == "resumed at step 2" and torch.load(ckpt, weights_only=False)["step"] == 3
    assert all(not p.requires_grad for p in model.net.parameters())  # the model stays frozen
    for p in model.net.parameters():
        p.requires_grad_(True)  # as the session fixture had it (the CAMs need autograd)
    weights = tmp_path / "w.pt"
    weights.write_bytes(model.path.read_bytes())
    path = fit_explainers.save_mincam(predictor, summary, weights)
    twin = type(model)(**{**model.__dict__, "path": weights})
    out = get_method("mincam")(twin, data["images"][:2].astype(np.float32), 0)
    assert path.is_file() and out.shape == (2, 224, 224) and 0 <= out.min() <= out.max() <= 1


# ------------------------------------------------------------------------------------------------ pipeline


def test_minimal_evidence_and_prototype_maps_in_a_full_analysis(model):
    """On the phantom: the mincam mask is its map cut at the level (not a percentile), its entry carries the call
    from its region alone, the enhanced prototype map says so, and the findings validate."""
    import SimpleITK as sitk

    from brainxai import layout
    from brainxai.load import InputInfo
    from brainxai.phantom import make_phantom

    options = pipeline.Options(methods=("mincam", "proto-late"), max_cam_slices=4, enhance=True)
    res = pipeline.analyse(make_phantom(), InputInfo("volume", "synthetic"), options, model=model, phantom=True)
    validate(res.findings)
    by = {e["method"]: e for e in res.findings["explanations"]}
    assert by["mincam"]["threshold_level"] == 0.5 and "enhanced" not in by["mincam"]
    assert by["proto-late"]["enhanced"] is True and "minimal_evidence" not in by["proto-late"]
    me = by["mincam"]["minimal_evidence"]
    assert me["label"] in CLASSES and abs(sum(me["probabilities"].values()) - 1) < 1e-3
    heat = sitk.GetArrayFromImage(res.images[layout.heatmap("mincam")])
    mask = sitk.GetArrayFromImage(res.images[layout.mask("mincam")]).astype(bool)
    region = sitk.GetArrayFromImage(res.images[layout.ANALYSIS_REGION]).astype(bool)
    assert not (mask & (heat < 0.5)).any() and not (mask & ~region).any()
    assert 100 * mask.sum() / region.sum() == pytest.approx(me["area_percent_of_brain"], abs=0.01)


# ------------------------------------------------------------------------------------------------ report


def test_the_builtin_writer_states_the_minimal_evidence():
    f = helpers.minimal_evidence_case()
    md = render_markdown(build_report(f), f)
    assert ("From the Minimal evidence region alone (3.4% of the brain on the explained slices; the rest blurred "
            "away), the model keeps glioma (p = 0.86).") in md
    assert "Minimal evidence for glioma, cut where its mask probability is at least 0.5" in md
    assert "(map sharpened by percentile stretch and CLAHE)" in md
    assert verify(f, md).ok, verify(f, md).summary()


@pytest.mark.parametrize("text, ok", [
    ("From the minimal-evidence region alone the model keeps glioma (p = 0.86).", True),
    ("From the minimal-evidence region alone the model keeps glioma (p = 0.93).", False),
    ("From the minimal-evidence region alone the model predicts meningioma.", False),
    ("With only the Minimal evidence region kept, the model still predicts glioma.", True),
    ("With only the Minimal evidence region kept, the model predicts no tumour.", False),
    ("The minimal evidence covers 3.4% of the brain.", True),
    ("The minimal evidence covers 7.5% of the brain.", False),
])
def test_minimal_evidence_statements_are_checked_against_the_findings(text, ok):
    result = verify(helpers.minimal_evidence_case(), text)
    assert result.ok is ok, result.summary()


def test_minimal_evidence_the_findings_do_not_hold_is_unsupported():
    result = verify(helpers.counterfactual_case(), "From the highlighted region alone the model keeps glioma.")
    assert not result.ok and "no minimal-evidence result" in result.unsupported[0].reason


def test_the_optimised_minimal_evidence_lowers_the_objective_from_the_predicted_mask(model):
    import torch

    from brainxai import preprocess
    from brainxai.model import as_batch, head_features
    from brainxai.phantom import make_phantom

    *_, slices = preprocess.model_slices(make_phantom(), model.cfg.input_size)
    x = slices[np.sort(np.argsort(-(slices > 0.1).sum((1, 2)))[:3])]
    f0 = torch.from_numpy(head_features(model, x))
    xt = as_batch(x)
    target = model.net.classification_head(f0).argmax(1).detach()
    head = torch.from_numpy(np.stack([preprocess.head_mask(s) for s in x])[:, None].astype(np.float32))
    with torch.no_grad():
        predicted = mincam.mask_logits(mincam.load_predictor(model), model.net, f0, target)
    before = [(p.detach().clone(), None if p.grad is None else p.grad.clone()) for p in model.net.parameters()]
    refined = mincam.refine(model, xt, f0, predicted, target, steps=8)

    def scored(logits):
        with torch.no_grad():
            loss, kept, _ = mincam.objective(model.net, model.cfg.temperature, xt, head, logits, f0, target)
        return loss.numpy(), kept.numpy()

    # refine starts from the predicted logits read as raw values, i.e. bounded once more (see mincam.refine)
    (loss_r, kept_r), (loss_p, kept_p) = scored(refined), scored(mincam.BOUND * torch.tanh(predicted / mincam.BOUND))
    assert (kept_r >= kept_p).all()  # a slice whose region kept the call still does
    assert kept_r.sum() > kept_p.sum() or loss_r.sum() < loss_p.sum()  # and the optimisation gained something
    for p, (w, g) in zip(model.net.parameters(), before):  # neither the weights nor their gradients were touched
        assert torch.equal(p, w) and (g is None if p.grad is None else torch.equal(p.grad, g))


def test_a_re_thresholded_minimal_evidence_mask_is_said_to_be_cut_by_percentile():
    f = helpers.minimal_evidence_case()
    entry = next(e for e in f["explanations"] if e["method"] == "mincam")
    del entry["threshold_level"]  # what rethreshold leaves
    entry["threshold_percentile"] = 97.0
    validate(f)
    md = render_markdown(build_report(f), f)
    assert "Minimal evidence for glioma, thresholded at percentile 97.0" in md
    assert "region alone, as cut at the analysis level (mask probability 0.5, not recomputed at percentile 97.0)," in md
    assert verify(f, md).ok, verify(f, md).summary()
