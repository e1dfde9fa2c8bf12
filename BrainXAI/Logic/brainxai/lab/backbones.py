"""Backbone comparison: every paper backbone trained with the same budget on the same split, one table.

CPU-scale on purpose (few epochs, small input): it ranks backbones under equal conditions, it does not reproduce
the paper's absolute numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

from .evaluate import EvalOptions, evaluate
from ..model import load_model
from ..model_config import PAPER_BACKBONES, ModelConfig, encoder_name
from .train import train


def compare(
    data_root: Path,
    work: Path,
    backbones: list[str] | None = None,
    epochs: int = 2,
    size: int = 128,
    seed: int = 0,
    cam_slices: int = 100,
    cache: Path | None = None,
):
    """Yields one row per backbone as soon as it is trained and evaluated (the caller writes as it goes: a long
    run that is stopped keeps the finished rows)."""
    data_root, work = Path(data_root), Path(work)
    for paper_name in backbones or list(PAPER_BACKBONES):
        encoder = encoder_name(paper_name)
        folder = work / encoder
        folder.mkdir(parents=True, exist_ok=True)
        weights = folder / f"{encoder}.pt"
        print(f"== {paper_name} ({encoder}): {epochs} epochs at {size} px", flush=True)
        # The paper's data only (figshare + Br35H): the template slices are the default model's robustness
        # addition, not part of the backbone comparison.
        card = train(data_root, weights, epochs=epochs, seed=seed, cfg=ModelConfig(encoder=encoder, input_size=size),
                     cache=cache, templates=False)
        model = load_model(weights)
        options = EvalOptions(methods=("gradcam", "gradcam++"), split="val", max_cam_slices=cam_slices,
                              perturbation_slices=0, seed=seed)
        m = evaluate(model, data_root / "figshare", data_root / "br35h_no_tumor", options, cache=cache)
        yield {
            "paper_backbone": paper_name,
            "encoder": encoder,
            "pretrained": card.get("pretrained"),
            "parameters_m": round(sum(p.numel() for p in model.net.parameters()) / 1e6, 1),
            "train_minutes": card["training"]["minutes"],
            "accuracy": m["accuracy"],
            "macro_f1": m["macro_f1"],
            "ece": m["ece"],
            "tumour_dice": m["segmentation_dice"],
            "cam": {k: {"dice": v["dice"], "pointing_game": v["pointing_game"], "n": v["n"]} for k, v in m["cam"].items()},
        }


def render_table(rows: list[dict], epochs: int, size: int, command: str) -> str:
    lines = [
        "# Backbone comparison (CPU scale)",
        "",
        f"Produced by `{command}`: each backbone trained from scratch (ImageNet weights only if already cached "
        f"locally) for {epochs} epochs at {size} px, seed 0, on the same patient-separated split, then evaluated on "
        "its validation blocks (figshare CE-T1 + Br35H). Grad-CAM / Grad-CAM++ on the true class, 90th-percentile "
        "masks, pointing game tolerance 15 px. Same architecture and losses as the default model (smp U-Net, "
        "classification head on decoder block 1 with class-map supervision, temperature scaling). An equal, short "
        "budget: the ranking is the point, not the absolute figures (the default model trains much longer, see "
        "MODEL_CARD.md). The source paper compares nine backbones but names only these eight; all eight are "
        "provided by segmentation-models-pytorch / timm.",
        "",
        "| paper backbone | smp encoder | params (M) | train min | accuracy | macro F1 | ECE | tumour Dice "
        "| Grad-CAM pointing | Grad-CAM++ pointing | Grad-CAM++ Dice |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        g, gpp = r["cam"]["gradcam"], r["cam"]["gradcam++"]
        lines.append(f"| {r['paper_backbone']} | `{r['encoder']}` | {r['parameters_m']} | {r['train_minutes']} | "
                     f"{r['accuracy']:.3f} | {r['macro_f1']:.3f} | {r['ece']:.3f} | {r['tumour_dice']:.3f} | "
                     f"{g['pointing_game']:.3f} | {gpp['pointing_game']:.3f} | {gpp['dice']:.3f} |")
    return "\n".join(lines) + "\n"


def write(rows: list[dict], out: Path, epochs: int, size: int, command: str) -> None:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_table(rows, epochs, size, command), encoding="utf-8")
    out.with_suffix(".json").write_text(json.dumps(rows, indent=2), encoding="utf-8")
