"""overview.png: the slices with most lesion/heat, with the heatmap and the masks overlaid (radiological display)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def pick_slices(score: np.ndarray, n: int = 4) -> list[int]:
    """n distinct slices spread over the extent where score > 0, always including the strongest."""
    nz = np.nonzero(score > 0)[0]
    if nz.size == 0:
        return [int(len(score) // 2)]
    picks = {int(score.argmax())} | {int(i) for i in np.linspace(nz[0], nz[-1], n + 2)[1:-1].round()}
    return sorted(picks)[:n] if len(picks) > n else sorted(picks)


def save_overview(data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    image, heat, mask, seg = data["image"], data["heatmap"], data["mask"], data["segmentation"]
    score = seg.sum((1, 2)) + (heat.sum((1, 2)) if heat is not None else 0)
    ks = pick_slices(score)
    sx, sy = data["spacing"]
    extent = (0, image.shape[2] * sx, image.shape[1] * sy, 0)
    fig, axes = plt.subplots(2, len(ks), figsize=(3.2 * len(ks), 6.6), squeeze=False)
    for col, k in enumerate(ks):
        top, bottom = axes[0, col], axes[1, col]
        for ax in (top, bottom):
            ax.imshow(image[k], cmap="gray", extent=extent, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        if heat is not None:
            top.imshow(np.ma.masked_less(heat[k], 0.05), cmap="jet", alpha=0.45, extent=extent, vmin=0, vmax=1)
        if mask is not None and mask[k].any():
            bottom.contour(mask[k], levels=[0.5], colors="yellow", linewidths=1.0, extent=extent, origin="upper")
        if seg[k].any():
            bottom.contour(seg[k], levels=[0.5], colors="cyan", linewidths=1.0, extent=extent, origin="upper")
        top.set_title(f"axial slice {k}", fontsize=9)
        top.text(2, 8, "R", color="white", fontsize=9, va="top")  # radiological display: patient right on the left
        top.text(extent[1] - 2, 8, "L", color="white", fontsize=9, va="top", ha="right")
    axes[0, 0].set_ylabel(f"{data['method']} heatmap", fontsize=9)
    axes[1, 0].set_ylabel(f"{data['method']} mask (yellow)\nsegmentation (cyan)", fontsize=9)
    title = f"BrainXAI: model favours {data['label']}"
    if data.get("phantom"):
        title = "PHANTOM (synthetic, not a patient) - " + title
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
