"""The model's configuration and where its weights are. No torch here: the command line and the pipeline name,
check and describe a model before torch (over a second to import) is loaded."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from . import CLASSES
from .errors import BrainXAIError

DEFAULT_WEIGHTS = "brainxai_unet_resnet18.pt"

# The source paper's backbones -> the segmentation-models-pytorch encoder that provides each ("tu-" = timm).
# Missing: none of the named eight; the paper's own Keras variants differ in details (e.g. EfficientNet size).
PAPER_BACKBONES = {
    "VGG16": "vgg16",
    "ResNet50": "resnet50",
    "DenseNet121": "densenet121",
    "Xception": "xception",
    "InceptionV3": "tu-inception_v3",
    "InceptionResNetV2": "inceptionresnetv2",
    "EfficientNetB0": "efficientnet-b0",
    "MobileNetV2": "mobilenet_v2",
}
DEEPEST = "deepest"  # CAM target: the feature map the classification head pools, whatever the backbone
HEAD_STAGE = 1  # the classification head pools decoder block 1 (1/8 of the input: 28x28 at 224 px)


def encoder_name(backbone: str) -> str:
    """A paper name (case-insensitive) or any smp encoder name -> the smp encoder name."""
    import segmentation_models_pytorch as smp

    by_paper = {k.lower(): v for k, v in PAPER_BACKBONES.items()}
    name = by_paper.get(backbone.lower(), backbone)
    if not name.startswith("tu-") and name not in smp.encoders.get_encoder_names():
        raise BrainXAIError(f"unknown backbone '{backbone}': use one of {', '.join(PAPER_BACKBONES)} "
                            "or a segmentation-models-pytorch encoder name")
    return name


@dataclass
class ModelConfig:
    encoder: str = "resnet18"
    input_size: int = 224
    decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16)
    classes: tuple[str, ...] = CLASSES
    # The CAM target layer: the features the classification head pools ("deepest"), or a dotted module path.
    cam_layer: str = DEEPEST
    # Which decoder block's output the classification head pools; None = smp's aux head on the deepest encoder
    # stage (models trained before 0.3 have no such key and are read that way).
    head_stage: int | None = HEAD_STAGE
    pretrained: str | None = None  # "imagenet" when trained from locally available ImageNet weights
    temperature: float = 1.0

    def to_dict(self) -> dict:
        return {**self.__dict__, "decoder_channels": list(self.decoder_channels), "classes": list(self.classes)}

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        d = dict(d)
        d["decoder_channels"] = tuple(d["decoder_channels"])
        d["classes"] = tuple(d["classes"])
        d.setdefault("head_stage", None)
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def default_weights_path() -> Path:
    return Path(str(resources.files("brainxai") / "weights" / DEFAULT_WEIGHTS))


def weights_path(path: str | Path | None = None) -> Path:
    """The weights file to load (the packaged one by default); a one-line error if it is not there."""
    path = Path(path) if path else default_weights_path()
    if not path.is_file():
        raise BrainXAIError(f"model weights not found: {path} (train with 'brainxai train' or reinstall brainxai)")
    return path
