"""The shipped weights: loadable, identified, and they reproduce their model card on the validation split."""

import numpy as np
import pytest
import torch

from brainxai import CLASSES
from brainxai.lab.datasets import load_split
from brainxai.model import predict_slices
from brainxai.model_config import default_weights_path
from brainxai.lab.train import evaluate

# Regression floors on the figshare/Br35H validation blocks. The shipped model (fine-tuned for whole volumes, issue 17)
# measures 0.909 / 0.695 / ECE 0.059; the previous default's 0.928 / 0.713 / 0.023 floors (0.70, 0.05) were lowered
# with it, a trade stated in README: 9/9 healthy heads called no_tumor instead of 1/9.
ACCURACY_FLOOR, DICE_FLOOR = 0.90, 0.68
ECE_CEILING = 0.07  # after temperature scaling fitted on the separate calibration block


def test_weights_are_small_and_identified(model):
    assert default_weights_path().stat().st_size <= 30 * 2**20
    assert len(model.sha256) == 64 and model.info()["classes"] == list(CLASSES)
    assert model.card["validation"]["n"] > 500


def test_validation_metrics_reproduce_the_card(model, data_dir):
    _, val_samples, _, val = load_split(data_dir, model.cfg.input_size)
    metrics = evaluate(model.net.to(memory_format=torch.channels_last), val, temperature=model.cfg.temperature)
    card = model.card["validation"]
    assert metrics["n"] == card["n"] == len(val_samples)
    # fp16 storage of the weights may move a borderline slice or two, no more.
    assert metrics["accuracy"] == pytest.approx(card["accuracy"], abs=0.01)
    assert metrics["tumour_dice_mean"] == pytest.approx(card["tumour_dice_mean"], abs=0.01)
    assert metrics["accuracy"] >= ACCURACY_FLOOR
    assert metrics["tumour_dice_mean"] >= DICE_FLOOR
    assert model.cfg.temperature == model.card["calibration"]["temperature"] != 1.0
    assert metrics["ece"] == pytest.approx(card["ece"], abs=0.01)
    assert metrics["ece"] <= ECE_CEILING


def test_predict_slices_shapes_and_ranges(model):
    x = np.random.default_rng(0).random((3, model.cfg.input_size, model.cfg.input_size), dtype=np.float32)
    probs, seg = predict_slices(model, x, batch_size=2)
    assert probs.shape == (3, 4) and seg.shape == x.shape
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
    assert seg.min() >= 0 and seg.max() <= 1


def test_imagenet_init_folds_rgb_filters(tmp_path):
    """A locally cached 3-channel ImageNet encoder loads into the 1-channel network, first conv summed over RGB."""
    import segmentation_models_pytorch as smp
    from safetensors.torch import save_file

    from brainxai.model import build_network, init_from_imagenet
    from brainxai.model_config import ModelConfig, encoder_name

    rgb = smp.encoders.get_encoder("resnet18", in_channels=3, weights=None)
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in rgb.state_dict().items()}, str(path))
    net = build_network(ModelConfig(encoder=encoder_name("resnet18"), input_size=64))
    init_from_imagenet(net, path)
    torch.testing.assert_close(net.encoder.conv1.weight, rgb.conv1.weight.sum(1, keepdim=True))
    torch.testing.assert_close(net.encoder.layer4[1].conv2.weight, rgb.layer4[1].conv2.weight)


def test_every_paper_backbone_maps_to_an_encoder():
    from brainxai.errors import BrainXAIError
    from brainxai.model_config import PAPER_BACKBONES, encoder_name

    assert len(PAPER_BACKBONES) == 8
    assert encoder_name("densenet121") == encoder_name("DenseNet121") == "densenet121"
    with pytest.raises(BrainXAIError, match="unknown backbone"):
        encoder_name("alexnet-9000")


@pytest.mark.parametrize("encoder", ["resnet18", "mobilenet_v2"])
def test_dual_head_matches_smp_decoder_and_its_class_maps_average_to_the_logits(encoder):
    """DualHeadUnet re-runs smp's decoder loop to tap a block: the segmentation must be smp's own, the
    classifier view must give the same logits, and the class maps must average to the logits (minus bias)."""
    from brainxai.model import ClassifierView, ModelConfig, build_network

    torch.manual_seed(0)
    net = build_network(ModelConfig(encoder=encoder, input_size=64)).eval()
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        features = net.encoder(x)
        torch.testing.assert_close(net._decode(features)[0], net.decoder(features))
        masks, logits, maps = net(x, with_maps=True)
        assert maps.shape == (2, 4, 8, 8)  # decoder block 1: 1/8 of the input
        torch.testing.assert_close(maps.mean((2, 3)) + net.classification_head[3].bias, logits)
        torch.testing.assert_close(ClassifierView(net)(x), logits)
        torch.testing.assert_close(net.segmentation_head(net.decoder(features)), masks)


def test_legacy_checkpoints_keep_the_encoder_head():
    from brainxai.model import ClassifierView, ModelConfig, build_network

    cfg = ModelConfig.from_dict({k: v for k, v in ModelConfig(input_size=64).to_dict().items() if k != "head_stage"})
    assert cfg.head_stage is None
    net = build_network(cfg).eval()
    with torch.no_grad():
        x = torch.rand(1, 1, 64, 64)
        torch.testing.assert_close(ClassifierView(net)(x), net(x)[1])


def test_cam_loss_prefers_maps_on_the_tumour():
    from brainxai.lab.train import NO_TUMOR, cam_loss

    m = torch.zeros(2, 1, 32, 32)
    m[:, :, 8:16, 8:16] = 1
    y = torch.tensor([0, NO_TUMOR])
    on = torch.full((2, 4, 8, 8), -4.0)
    on[0, 0, 2:4, 2:4] = 4.0
    off = torch.full((2, 4, 8, 8), -4.0)
    off[0, 0, 5:7, 5:7] = 4.0
    noisy_healthy = on.clone()
    noisy_healthy[1, 1] = 4.0  # tumour-class evidence on a no-tumour slice
    assert cam_loss(on, y, m) < cam_loss(off, y, m)
    assert cam_loss(on, y, m) < cam_loss(noisy_healthy, y, m)


def test_folded_network_computes_what_the_trained_one_does(model):
    from brainxai.model import fold_batchnorm

    folded = fold_batchnorm(model.net)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.net.modules())  # the original is untouched
    x = torch.from_numpy(np.random.default_rng(1).random((2, 1, model.cfg.input_size, model.cfg.input_size),
                                                         dtype=np.float32))
    with torch.no_grad():
        for a, b in zip(model.net(x), folded(x)):
            np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-3)


def test_fast_precision_agrees_with_fp32_on_validation_slices(model, data_dir):
    from brainxai.model import fast_precision_available

    if not fast_precision_available():
        pytest.skip("this CPU has no native bfloat16: 'fast' is fp32 here")
    _, _, _, val = load_split(data_dir, model.cfg.input_size)
    x = val["images"][::8].astype(np.float32)  # ~100 slices over the whole split
    p32, s32, f32 = predict_slices(model, x, batch_size=8, keep_features=True)
    pf, sf, ff = predict_slices(model, x, batch_size=8, precision="fast", keep_features=True)
    assert np.abs(pf - p32).max() <= 0.05
    assert (pf.argmax(1) == p32.argmax(1)).mean() >= 0.98
    a, b = s32 > 0.5, sf > 0.5
    assert 2 * (a & b).sum() / (a.sum() + b.sum()) >= 0.99
    assert ff.dtype == np.float32 and ff.shape == f32.shape
