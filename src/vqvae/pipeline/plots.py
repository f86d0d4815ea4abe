"""Pictures for the run folder: image grids, codebook usage, loss curves, spectrograms.

Every matplotlib figure is made with ``layout="constrained"``, which makes room for the titles,
axis labels and the figure's suptitle of each panel (a plain grid lets a panel's x label run into
the title of the panel below it).
"""

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
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.5), layout="constrained")
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
    n_rows = math.ceil(n / cols)
    fig, axes = plt.subplots(
        n_rows, cols, figsize=(4.5 * cols, 3 * n_rows), layout="constrained", squeeze=False
    )
    axes = axes.ravel()
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


def plot_spectrograms(
    path: str | Path,
    rows: list[np.ndarray],
    row_names: list[str],
    sample_rate: int,
    column_names: list[str] | None = None,
    n_fft: int = 256,
) -> Path:
    """A grid of log-power spectrograms (dB): one row per waveform batch (N, T), e.g.
    originals, reconstructions, samples; columns share a colour scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from vqvae.metrics.audio import stft_magnitude

    n_cols = max(len(r) for r in rows)
    fig, axes = plt.subplots(
        len(rows),
        n_cols,
        figsize=(2.0 * n_cols, 1.8 * len(rows)),
        layout="constrained",
        squeeze=False,
    )
    for i, row in enumerate(rows):
        spec = stft_magnitude(torch.as_tensor(np.asarray(row, np.float32)), n_fft, n_fft // 4)
        db = 20 * np.log10(spec.numpy() + 1e-5)  # (N, F, frames)
        seconds, khz = row.shape[-1] / sample_rate, sample_rate / 2000
        for j in range(n_cols):
            ax = axes[i, j]
            if j >= len(row):
                ax.axis("off")
                continue
            ax.imshow(
                db[j],
                origin="lower",
                aspect="auto",
                cmap="magma",
                vmin=-60,
                vmax=db.max(),
                extent=(0, seconds, 0, khz),
            )
            ax.tick_params(labelsize=6)
            ax.set_xticks([0, round(seconds, 2)] if i == len(rows) - 1 else [])
            ax.set_yticks([0, khz] if j == 0 else [])
            if j == 0:
                ax.set_ylabel(f"{row_names[i]}\nkHz", fontsize=8)
            if i == len(rows) - 1 and j == 0:
                ax.set_xlabel("s", fontsize=7)
            if i == 0 and column_names:
                ax.set_title(column_names[j], fontsize=8)
    return _save_figure(fig, path)
