"""Model stage: the dual-head network (tumour class + tumour mask), its packaged weights and slice-wise inference."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from . import CLASSES
from .errors import BrainXAIError

DEFAULT_WEIGHTS = "brainxai_unet_resnet18.pt"


@dataclass
class ModelConfig:
    encoder: str = "resnet18"
    input_size: int = 192
    decoder_channels: tuple[int, ...] = (128, 64, 32, 16, 16)
    classes: tuple[str, ...] = CLASSES
    # The CAM target layer: deepest encoder stage (the one the classification head pools).
    cam_layer: str = "encoder.layer4"
    temperature: float = 1.0

    def to_dict(self) -> dict:
        return {**self.__dict__, "decoder_channels": list(self.decoder_channels), "classes": list(self.classes)}

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        d = dict(d)
        d["decoder_channels"] = tuple(d["decoder_channels"])
        d["classes"] = tuple(d["classes"])
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def build_network(cfg: ModelConfig) -> nn.Module:
    """smp U-Net with smp's auxiliary classification head on the deepest encoder features."""
    import segmentation_models_pytorch as smp

    return smp.Unet(
        encoder_name=cfg.encoder,
        encoder_weights=None,  # no download at run time; trained from scratch
        in_channels=1,
        classes=1,
        decoder_channels=cfg.decoder_channels,
        aux_params={"classes": len(cfg.classes), "dropout": 0.2},
    )


class ClassifierView(nn.Module):
    """Exposes only the class logits of the dual-head net, as pytorch-grad-cam expects a single-output model.

    It runs the encoder and the classification head only: the decoder does not influence the class score,
    so skipping it gives the same logits for a fraction of the cost (matters for Score-CAM).
    """

    def __init__(self, net: nn.Module, temperature: float = 1.0):
        super().__init__()
        self.net = net
        self.temperature = temperature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.net.encoder(x)
        return self.net.classification_head(features[-1]) / self.temperature


@dataclass
class LoadedModel:
    net: nn.Module
    cfg: ModelConfig
    name: str
    version: str
    sha256: str
    card: dict = field(default_factory=dict)

    def classifier(self) -> ClassifierView:
        return ClassifierView(self.net, self.cfg.temperature).eval()

    def layer(self, dotted: str | None = None) -> nn.Module:
        module = self.net
        for part in (dotted or self.cfg.cam_layer).split("."):
            module = getattr(module, part)
        return module

    def info(self) -> dict:
        return {"name": self.name, "version": self.version, "sha256": self.sha256, "classes": list(self.cfg.classes)}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def default_weights_path() -> Path:
    return Path(str(resources.files("brainxai") / "weights" / DEFAULT_WEIGHTS))


def save_checkpoint(net: nn.Module, cfg: ModelConfig, path: Path, meta: dict) -> None:
    # fp16 halves the shipped size; inference casts back to fp32.
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in net.state_dict().items()}
    torch.save({"config": cfg.to_dict(), "state_dict": state, "meta": meta}, path)


def load_model(path: str | Path | None = None) -> LoadedModel:
    path = Path(path) if path else default_weights_path()
    if not path.is_file():
        raise BrainXAIError(f"model weights not found: {path} (train with 'brainxai train' or reinstall brainxai)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling problem means the same thing to the user
        raise BrainXAIError(f"cannot read model weights {path}: {exc.__class__.__name__}; re-train or reinstall") from exc
    cfg = ModelConfig.from_dict(ckpt["config"])
    net = build_network(cfg)
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()})
    net.eval()
    meta = ckpt.get("meta", {})
    card_path = path.with_suffix(".json")
    card = json.loads(card_path.read_text()) if card_path.is_file() else {}
    return LoadedModel(
        net=net,
        cfg=cfg,
        name=meta.get("name", f"unet-{cfg.encoder}-dualhead"),
        version=meta.get("version", "unknown"),
        sha256=_sha256(path),
        card=card,
    )


@torch.no_grad()
def predict_slices(
    model: LoadedModel,
    slices: np.ndarray,
    batch_size: int = 16,
    progress: Callable[[int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """slices: (N, S, S) float32 in [0, 1] at the model size. Returns class probabilities (N, C) and
    tumour probability maps (N, S, S)."""
    probs = np.empty((len(slices), len(model.cfg.classes)), np.float32)
    seg = np.empty(slices.shape, np.float32)
    for start in range(0, len(slices), batch_size):
        if cancel is not None and cancel():
            raise BrainXAIError("cancelled")
        x = torch.from_numpy(np.ascontiguousarray(slices[start : start + batch_size, None]))
        mask_logits, class_logits = model.net(x)
        probs[start : start + len(x)] = torch.softmax(class_logits / model.cfg.temperature, 1).numpy()
        seg[start : start + len(x)] = torch.sigmoid(mask_logits[:, 0]).numpy()
        if progress is not None:
            progress(len(x))
    return probs, seg
