"""The shipped weights: loadable, identified, and they reproduce their model card on the validation split."""

import numpy as np
import pytest
import torch

from brainxai import CLASSES
from brainxai.data import load_split
from brainxai.model import default_weights_path, load_model, predict_slices
from brainxai.train import evaluate

# The pipeline issue's floors on the patient-separated validation split (the shipped model: 0.928 and 0.711).
ACCURACY_FLOOR, DICE_FLOOR = 0.90, 0.70
ECE_CEILING = 0.05  # after temperature scaling fitted on the separate calibration block


@pytest.fixture(scope="module")
def model():
    return load_model()


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

    from brainxai.model import ModelConfig, build_network, encoder_name, init_from_imagenet

    rgb = smp.encoders.get_encoder("resnet18", in_channels=3, weights=None)
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in rgb.state_dict().items()}, str(path))
    net = build_network(ModelConfig(encoder=encoder_name("resnet18"), input_size=64))
    init_from_imagenet(net, path)
    torch.testing.assert_close(net.encoder.conv1.weight, rgb.conv1.weight.sum(1, keepdim=True))
    torch.testing.assert_close(net.encoder.layer4[1].conv2.weight, rgb.layer4[1].conv2.weight)


def test_every_paper_backbone_maps_to_an_encoder():
    from brainxai.errors import BrainXAIError
    from brainxai.model import PAPER_BACKBONES, encoder_name

    assert len(PAPER_BACKBONES) == 8
    assert encoder_name("densenet121") == encoder_name("DenseNet121") == "densenet121"
    with pytest.raises(BrainXAIError, match="unknown backbone"):
        encoder_name("alexnet-9000")
