"""Model stage: the dual-head network (tumour class + tumour mask), its packaged weights and slice-wise inference."""

from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import segmentation_models_pytorch as smp
import torch
from segmentation_models_pytorch.base import ClassificationHead
from torch import nn

from . import progress as progress_mod
from .errors import BrainXAIError
from .progress import Cancel, Fraction
from .model_config import DEEPEST, ModelConfig, weights_path


def build_network(cfg: ModelConfig) -> nn.Module:
    if cfg.head_stage is None:  # legacy: smp's auxiliary classification head on the deepest encoder features
        return smp.Unet(encoder_name=cfg.encoder, encoder_weights=None, in_channels=1, classes=1,
                        decoder_channels=cfg.decoder_channels, aux_params={"classes": len(cfg.classes), "dropout": 0.2})
    return DualHeadUnet(cfg)


class DualHeadUnet(nn.Module):
    """smp's U-Net (encoder, decoder, segmentation head) with smp's classification head moved from the 1/32
    encoder output to a decoder block's output (1/8 of the input by default).

    Why: a linear head on average-pooled features makes the class score the mean of a class map
    W_c . F(x, y); at 1/8 resolution that map is fine enough to be checked against the tumour outline, and
    training supervises it to be positive on the tumour and negative elsewhere (train.cam_loss). Grad-CAM on
    these features then shows where the score really comes from instead of a 7x7 blur.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        unet = smp.Unet(encoder_name=cfg.encoder, encoder_weights=None, in_channels=1, classes=1,
                        decoder_channels=cfg.decoder_channels)
        self.encoder, self.decoder, self.segmentation_head = unet.encoder, unet.decoder, unet.segmentation_head
        self.stage = cfg.head_stage
        self.classification_head = ClassificationHead(cfg.decoder_channels[cfg.head_stage], len(cfg.classes),
                                                      pooling="avg", dropout=0.2)
        self.head_input = nn.Identity()  # hook point for CAMs: exactly what the classification head pools

    def _decode(self, features: list[torch.Tensor], upto: int | None = None):
        """smp 0.6's UnetDecoder.forward, also returning block `stage`'s output; stops after block `upto`."""
        shapes = [f.shape[2:] for f in features][::-1]
        skips = features[1:][::-1]
        x, staged = self.decoder.center(skips[0]), None
        for i, block in enumerate(self.decoder.blocks):
            x = block(x, *shapes[i + 1], skip_connection=skips[i + 1] if i + 1 < len(skips) else None)
            if i == self.stage:
                staged = self.head_input(x)
            if i == upto:
                break
        return x, staged

    def head_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._decode(self.encoder(x), upto=self.stage)[1]

    def class_maps(self, features: torch.Tensor) -> torch.Tensor:
        """Per-class score maps W_c . F(x, y) (bias excluded), whose spatial mean is the class logit minus bias."""
        linear = self.classification_head[3]
        return torch.einsum("bchw,kc->bkhw", features, linear.weight)

    def forward(self, x: torch.Tensor, with_maps: bool = False):
        out, staged = self._decode(self.encoder(x))
        masks, labels = self.segmentation_head(out), self.classification_head(staged)
        return (masks, labels, self.class_maps(staged)) if with_maps else (masks, labels)


def local_imagenet_weights(encoder: str) -> Path | None:
    """smp's ImageNet weights for this encoder if they are already in the local Hugging Face cache (no network)."""
    from huggingface_hub import try_to_load_from_cache

    settings = smp.encoders.encoders.get(encoder, {}).get("pretrained_settings", {}).get("imagenet")
    if not settings or "repo_id" not in settings:
        return None
    found = try_to_load_from_cache(settings["repo_id"], "model.safetensors", revision=settings.get("revision"))
    return Path(found) if isinstance(found, str) else None


def init_from_imagenet(net: nn.Module, weights: Path) -> None:
    """Load 3-channel ImageNet encoder weights into the 1-channel network (smp folds the first conv)."""
    from safetensors.torch import load_file

    state, own = load_file(str(weights), device="cpu"), net.encoder.state_dict()
    for key, value in state.items():  # fold RGB filters to grey by summing, as smp's patch_first_conv does
        if key in own and value.ndim == 4 and value.shape[1] == 3 and own[key].shape[1] == 1:
            state[key] = value.sum(1, keepdim=True)
    net.encoder.load_state_dict(state)


class ClassifierView(nn.Module):
    """Exposes only the class logits of the dual-head net, as pytorch-grad-cam expects a single-output model.

    It runs only what the class score depends on (encoder, and the decoder up to the head's block): the same
    logits for a fraction of the cost, which matters for Score-CAM.
    """

    def __init__(self, net: nn.Module, temperature: float = 1.0):
        super().__init__()
        self.net = net
        self.temperature = temperature
        self.deepest = nn.Identity()  # legacy models: a hook point on the deepest encoder features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.net, DualHeadUnet):
            return self.net.classification_head(self.net.head_features(x)) / self.temperature
        features = self.net.encoder(x)
        return self.net.classification_head(self.deepest(features[-1])) / self.temperature

    def target_layer(self, dotted: str = DEEPEST) -> nn.Module:
        if dotted == DEEPEST:
            return self.net.head_input if isinstance(self.net, DualHeadUnet) else self.deepest
        module = self.net
        for part in dotted.split("."):
            module = getattr(module, part)
        return module


class HeadView(nn.Module):
    """The classification head alone, on the features it pools (computed once, in the model stage).

    pytorch-grad-cam run on this view differentiates the class score with respect to those features through the
    head only: the same gradients as through the whole network (the features are its input), for no second forward
    pass and no backward pass through the encoder. `features` is the target layer.
    """

    def __init__(self, net: nn.Module, temperature: float = 1.0):
        super().__init__()
        self.net = net
        self.temperature = temperature
        self.features = nn.Identity()

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        if not f.requires_grad:  # the target layer's gradient hook needs a graph that starts at the features
            f = f.detach().requires_grad_()
        return self.net.classification_head(self.features(f)) / self.temperature


@contextmanager
def _kept_head_input(net: nn.Module, keep: bool = True):
    """Yields a list that collects, as float32 arrays, what the classification head pools on each forward pass."""
    kept: list[np.ndarray] = []
    if not keep:
        yield kept
        return
    if isinstance(net, DualHeadUnet):
        module, pick = net.head_input, lambda out: out
    else:  # legacy: smp's aux head on the deepest encoder stage
        module, pick = net.encoder, lambda out: out[-1]
    hook = module.register_forward_hook(lambda _m, _i, out: kept.append(pick(out).float().numpy()))
    try:
        yield kept
    finally:
        hook.remove()


def fold_batchnorm(net: nn.Module) -> nn.Module:
    """A copy of `net` (in eval mode) with every BatchNorm2d folded into the Conv2d registered just before it, as
    smp's and torchvision's blocks run them (a test checks the copy's outputs against the original's)."""
    import copy

    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = copy.deepcopy(net).eval()
    for module in folded.modules():
        names = list(module._modules)
        for conv_name, bn_name in zip(names, names[1:]):
            conv, bn = module._modules[conv_name], module._modules[bn_name]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                module._modules[conv_name] = fuse_conv_bn_eval(conv, bn)
                module._modules[bn_name] = nn.Identity()
    return folded


@contextmanager
def precision_mode(model: "LoadedModel", precision: str):
    """Yields (network, input preparation). precision "fast", where the CPU computes bfloat16 natively (AVX512-BF16
    / AMX; the model was trained under bf16 autocast): batch norm folded into the convolutions, bf16 weights and
    channels-last tensors; elsewhere, and for "fp32", the network as trained, in fp32."""
    if precision == "fast" and fast_precision_available():
        yield model.fast_network(), lambda x: x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    else:
        yield model.net, lambda x: x


@dataclass
class LoadedModel:
    net: nn.Module
    cfg: ModelConfig
    name: str
    version: str
    sha256: str
    card: dict = field(default_factory=dict)
    path: Path | None = None  # the weights file (what is fitted on it lies beside it: guard.CONTRAST_CHECK)
    _fast: nn.Module | None = field(default=None, repr=False)

    def classifier(self, net: nn.Module | None = None) -> ClassifierView:
        return ClassifierView(self.net if net is None else net, self.cfg.temperature).eval()

    def fast_network(self) -> nn.Module:
        """The network for precision "fast" (see precision_mode), made once."""
        if self._fast is None:
            self._fast = fold_batchnorm(self.net).to(torch.bfloat16).to(memory_format=torch.channels_last)
        return self._fast

    def head_view(self) -> HeadView:
        return HeadView(self.net, self.cfg.temperature).eval()

    def info(self) -> dict:
        return {"name": self.name, "version": self.version, "sha256": self.sha256, "classes": list(self.cfg.classes)}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_checkpoint(net: nn.Module, cfg: ModelConfig, path: Path, meta: dict) -> None:
    # fp16 halves the shipped size; inference casts back to fp32.
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in net.state_dict().items()}
    torch.save({"config": cfg.to_dict(), "state_dict": state, "meta": meta}, path)


def load_model(path: str | Path | None = None) -> LoadedModel:
    path = weights_path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling problem means the same thing to the user
        raise BrainXAIError(f"cannot read model weights {path}: {exc.__class__.__name__}; re-train or reinstall") from exc
    card_path = path.with_suffix(".json")
    card = json.loads(card_path.read_text(encoding="utf-8")) if card_path.is_file() else {}
    sha256 = _sha256(path)
    if card.get("weights_sha256", sha256) != sha256:  # a damaged or swapped file must not give a wrong answer
        raise BrainXAIError(f"model weights {path} do not match their card {card_path.name} (sha256 {sha256[:12]}, "
                            f"card {card['weights_sha256'][:12]}): the file is damaged or was replaced; reinstall")
    try:
        cfg = ModelConfig.from_dict(ckpt["config"])
        with torch.device("meta"):  # no random initialisation of weights that are replaced at once
            net = build_network(cfg)
        net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()},
                            assign=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise BrainXAIError(f"model weights {path} are not a BrainXAI checkpoint ({exc.__class__.__name__}): "
                            "re-train or reinstall") from exc
    net.eval()
    meta = ckpt.get("meta", {})
    return LoadedModel(
        net=net,
        cfg=cfg,
        name=meta.get("name", f"unet-{cfg.encoder}-dualhead"),
        version=meta.get("version", "unknown"),
        sha256=sha256,
        card=card,
        path=path,
    )


def fast_precision_available() -> bool:
    """bfloat16 is only a speed-up where the CPU computes it natively (AVX512-BF16 / AMX); elsewhere it is slower."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def as_batch(slices: np.ndarray) -> torch.Tensor:
    """(N, S, S) -> the (N, 1, S, S) float32 tensor a network takes."""
    return torch.from_numpy(np.ascontiguousarray(slices[:, None], np.float32))


@torch.no_grad()  # not inference_mode: the CAMs later need the same parameters with autograd
def predict_slices(
    model: LoadedModel,
    slices: np.ndarray,
    batch_size: int = 16,
    progress: Fraction | None = None,
    cancel: Cancel | None = None,
    precision: str = "fp32",
    keep_features: bool = False,
) -> tuple[np.ndarray, ...]:
    """slices: (N, S, S) float32 in [0, 1] at the model size. Returns class probabilities (N, C) and
    tumour probability maps (N, S, S); with keep_features also the features the classification head pools
    (N, F, h, w) float32, from the same forward pass, for the CAMs. precision: see precision_mode. progress: told the
    fraction of the slices done after each batch."""
    probs = np.empty((len(slices), len(model.cfg.classes)), np.float32)
    seg = np.empty(slices.shape, np.float32)
    with precision_mode(model, precision) as (net, prepare), _kept_head_input(net, keep_features) as kept:
        for start in range(0, len(slices), batch_size):
            progress_mod.check(cancel)
            x = as_batch(slices[start : start + batch_size])
            mask_logits, class_logits = net(prepare(x))
            probs[start : start + len(x)] = torch.softmax(class_logits.float() / model.cfg.temperature, 1).numpy()
            seg[start : start + len(x)] = torch.sigmoid(mask_logits[:, 0].float()).numpy()
            if progress is not None:
                progress((start + len(x)) / len(slices))
    if not keep_features:
        return probs, seg
    return probs, seg, np.concatenate(kept) if kept else np.zeros((0,), np.float32)


@torch.no_grad()
def predict_classes(model: LoadedModel, slices: np.ndarray, batch_size: int = 16, cancel: Cancel | None = None,
                    precision: str = "fp32") -> np.ndarray:
    """Class probabilities (N, C) only: the layers the class score depends on, not the segmentation decoder."""
    probs = np.empty((len(slices), len(model.cfg.classes)), np.float32)
    with precision_mode(model, precision) as (net, prepare):
        view = model.classifier(net)  # divides by the temperature itself
        for start in range(0, len(slices), batch_size):
            progress_mod.check(cancel)
            logits = view(prepare(as_batch(slices[start : start + batch_size])))
            probs[start : start + len(logits)] = torch.softmax(logits.float(), 1).numpy()
    return probs


@torch.no_grad()
def head_features(model: LoadedModel, slices: np.ndarray, batch_size: int = 16, precision: str = "fp32") -> np.ndarray:
    """What the classification head pools, (N, F, h, w) float32: only the layers the class score depends on."""
    with precision_mode(model, precision) as (net, prepare), _kept_head_input(net) as kept:
        view = model.classifier(net)
        for start in range(0, len(slices), batch_size):
            view(prepare(as_batch(slices[start : start + batch_size])))
    return np.concatenate(kept)
