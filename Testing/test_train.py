"""brainxai train end to end on a tiny synthetic data root (64 px, 2 epochs): checkpoints after every epoch, and an
interrupted run resumed with --resume ends with exactly the weights of an uninterrupted one."""

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from brainxai.lab import train as train_mod
from brainxai.errors import BrainXAIError
from brainxai.model_config import ModelConfig


def _disc(rng, size=96, tumour=None):
    """A bright head disc with a darker skull ring; a tumour blob where given."""
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(yy - size / 2, xx - size / 2)
    img = np.where(r < 40, 120 + 30 * rng.random((size, size)), 10).astype(np.float32)
    img[(r > 36) & (r < 40)] = 200
    mask = np.zeros((size, size), np.uint8)
    if tumour is not None:
        cy, cx, rad, level = tumour
        blob = np.hypot(yy - cy, xx - cx) < rad
        img[blob] = level
        mask[blob] = 255
    return img.clip(0, 255).astype(np.uint8), mask


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    (root / "figshare" / "images").mkdir(parents=True)
    (root / "figshare" / "masks").mkdir()
    (root / "br35h_no_tumor").mkdir()
    rows = []
    per_label = 150  # the split drops GAP (20) indices around each validation and calibration block
    for i in range(1, 3 * per_label + 1):  # three labels in contiguous index ranges, as in figshare
        label = ("glioma", "meningioma", "pituitary")[(i - 1) // per_label]
        spot = {"glioma": (40, 35, 9, 230), "meningioma": (25, 60, 7, 250), "pituitary": (60, 48, 5, 240)}[label]
        img, mask = _disc(rng, tumour=spot)
        Image.fromarray(img).save(root / "figshare" / "images" / f"{i}.jpg")
        Image.fromarray(mask).save(root / "figshare" / "masks" / f"{i}.png")
        rows.append([i, label, f"images/{i}.jpg", f"masks/{i}.png", 96, 96])
    with open(root / "figshare" / "labels.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["index", "label", "image", "mask", "width", "height"], *rows])
    for i in range(1, per_label + 1):
        Image.fromarray(_disc(rng)[0]).save(root / "br35h_no_tumor" / f"{i}.jpg")
    return root


def _run(root, out, **kwargs):
    torch.set_num_threads(1)  # the same arithmetic on every run
    return train_mod.train(root, out, epochs=2, batch_size=16, cfg=ModelConfig(input_size=64), pretrained=False,
                           **kwargs)


def test_interrupted_training_resumes_to_the_same_weights(tiny_root, tmp_path, monkeypatch):
    full = tmp_path / "full" / "w.pt"
    card = _run(tiny_root, full)
    assert full.is_file() and card["training"]["epochs"] == 2
    assert not train_mod.checkpoint_path(full).exists()  # a finished run leaves only its weights

    part = tmp_path / "part" / "w.pt"
    real_save = train_mod.save_state

    def save_then_stop(path, state):
        real_save(path, state)
        raise KeyboardInterrupt  # the session ended after epoch 1

    monkeypatch.setattr(train_mod, "save_state", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        _run(tiny_root, part)
    monkeypatch.setattr(train_mod, "save_state", real_save)
    assert train_mod.checkpoint_path(part).is_file() and not part.exists()
    with pytest.raises(BrainXAIError, match="unfinished run"):  # never silently over a checkpoint
        _run(tiny_root, part)
    with pytest.raises(BrainXAIError, match="another recipe"):
        train_mod.train(tiny_root, part, epochs=3, batch_size=16, cfg=ModelConfig(input_size=64), pretrained=False,
                        resume=True)
    _run(tiny_root, part, resume=True)
    a, b = torch.load(full, weights_only=False), torch.load(part, weights_only=False)
    sa, sb = a["state_dict"], b["state_dict"]
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0, msg=k)


def test_fine_tuning_starts_from_the_given_weights_and_names_them(tiny_root, tmp_path):
    from brainxai.model import build_network

    base = tmp_path / "base" / "w.pt"
    _run(tiny_root, base)
    cfg = ModelConfig(input_size=64)
    net = build_network(cfg)
    named = train_mod.init_from_brainxai(net, cfg, base)
    assert named.startswith("fine-tuned from w.pt (sha256 ")
    shipped = torch.load(base, weights_only=True)["state_dict"]
    for k, v in net.state_dict().items():  # the network now holds the shipped (fp16) weights, not a fresh init
        torch.testing.assert_close(v, shipped[k].to(v.dtype), rtol=0, atol=0, msg=k)
    with pytest.raises(BrainXAIError, match="another architecture.*input_size"):
        train_mod.init_from_brainxai(build_network(ModelConfig(input_size=96)), ModelConfig(input_size=96), base)
    with pytest.raises(BrainXAIError, match="no such weights file"):
        train_mod.init_from_brainxai(net, cfg, tmp_path / "missing.pt")
    card = _run(tiny_root, tmp_path / "tuned" / "w.pt", init=base)
    assert card["pretrained"] == named and named in card["architecture"]
