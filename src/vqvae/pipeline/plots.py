"""Pictures for the run folder: image grids, codebook usage, loss curves."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image

from vqvae.files import atomic_path


def image_grid(rows: list[np.ndarray], scale: int = 1, pad: int = 1) -> Image.Image:
    """Lay out image rows ((N, C, H, W) float arrays in [0, 1]) on a white background."""
    n_cols = max(len(r) for r in rows)
    c, h, w = rows[0].shape[1:]
    cell_h, cell_w = h * scale + pad, w * scale + pad
    canvas = np.ones((len(rows) * cell_h + pad, n_cols * cell_w + pad, 3), dtype=np.float32)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            img = np.clip(img, 0, 1).transpose(1, 2, 0)  # (H, W, C)
            if c == 1:
                img = np.repeat(img, 3, axis=2)
            img = img.repeat(scale, 0).repeat(scale, 1)
            y, x = pad + i * cell_h, pad + j * cell_w
            canvas[y : y + h * scale, x : x + w * scale] = img
    return Image.fromarray((canvas * 255).round().astype(np.uint8))


def save_image_grid(path: str | Path, rows: list[np.ndarray], target_px: int = 48) -> Path:
    """Save a grid with each image enlarged (nearest neighbour) to about ``target_px`` pixels."""
    h = rows[0].shape[2]
    scale = max(1, round(target_px / h))
    with atomic_path(path) as tmp:
        image_grid(rows, scale=scale, pad=max(2, scale // 2)).save(tmp, format="PNG")
    return Path(path)


def _save_figure(fig, path: str | Path) -> Path:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def plot_codebook_usage(path: str | Path, counts: np.ndarray, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = np.asarray(counts, dtype=np.float64)
    order = np.sort(counts)[::-1]
    used = int((counts > 0).sum())
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
    axes[0].bar(np.arange(len(counts)), counts, width=1.0, color="tab:blue")
    axes[0].set(xlabel="code index", ylabel="assignments", title=title)
    axes[1].semilogy(np.arange(len(order)), np.maximum(order, 0.5), color="tab:orange")
    axes[1].set(
        xlabel="codes, most used first",
        ylabel="assignments (log)",
        title=f"{used}/{len(counts)} codes used",
    )
    return _save_figure(fig, path)


def plot_loss_curves(path: str | Path, rows: list[dict], keys: list[str], title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    present = [k for k in keys if any(k in r for r in rows)]
    n = max(1, len(present))
    cols = min(3, n)
    fig, axes = plt.subplots(
        math.ceil(n / cols), cols, figsize=(4.5 * cols, 3 * math.ceil(n / cols))
    )
    axes = np.atleast_1d(axes).ravel()
    for ax, key in zip(axes, present, strict=False):
        pts = [(r["step"], r[key]) for r in rows if key in r]
        ax.plot([p[0] for p in pts], [p[1] for p in pts])
        ax.set(xlabel="step", title=key.split("/")[-1])
        # Log scale for losses, unless a term is identically zero (FSQ has no commitment loss).
        if key.endswith(("loss", "recon", "commitment", "codebook")) and any(p[1] > 0 for p in pts):
            ax.set_yscale("log")
    for ax in axes[len(present) :]:
        ax.axis("off")
    fig.suptitle(title)
    return _save_figure(fig, path)
