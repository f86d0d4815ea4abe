"""The run folder's figures: every one is laid out by matplotlib's constrained layout, and no
title or axis label runs into another (a plain subplot grid puts a panel's x label on top of
the title of the panel below it)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from PIL import Image

from vqvae.pipeline import plots

pytest.importorskip("matplotlib")


@pytest.fixture
def figures(monkeypatch):
    """The figures the plot functions save, checked for overlaps before they are closed."""
    from matplotlib.layout_engine import ConstrainedLayoutEngine

    seen = []
    save = plots._save_figure

    def checked_save(fig, path):
        assert isinstance(fig.get_layout_engine(), ConstrainedLayoutEngine)
        fig.canvas.draw()
        seen.append(_overlaps(fig))
        return save(fig, path)

    monkeypatch.setattr(plots, "_save_figure", checked_save)
    return seen


def _overlaps(fig) -> list[tuple[str, str]]:
    """Pairs of texts (suptitle, panel titles, axis labels) whose boxes intersect."""
    renderer = fig.canvas.get_renderer()
    texts = [fig._suptitle] if fig._suptitle is not None else []
    for ax in fig.axes:
        if ax.axison:
            texts += [ax.title, ax.xaxis.label, ax.yaxis.label]
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts if t.get_text()]
    return [
        (a, b)
        for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2)
        if box_a.overlaps(box_b)
    ]


def _loss_rows(keys: list[str]) -> list[dict]:
    return [
        {"step": s, **{k: 1.0 / (s + 1 + i) for i, k in enumerate(keys)}} for s in range(0, 500, 25)
    ]


@pytest.mark.parametrize("n_keys", [1, 2, 4, 6])
def test_loss_curves(tmp_path, figures, n_keys):
    keys = ["train/loss", "train/recon", "train/commitment", "train/codebook", "perplexity", "lr"]
    path = plots.plot_loss_curves(
        tmp_path / "loss_curves.png", _loss_rows(keys[:n_keys]), keys, "VQ-VAE training"
    )
    assert figures == [[]]
    assert Image.open(path).size[0] > 300


def test_codebook_usage(tmp_path, figures):
    counts = np.random.default_rng(0).poisson(2.0, 64)
    path = plots.plot_codebook_usage(tmp_path / "codebook_usage.png", counts, "codebook usage")
    assert figures == [[]] and path.is_file()


def test_spectrograms(tmp_path, figures):
    rng = np.random.default_rng(0)
    rows = [rng.standard_normal((4, 2048)).astype(np.float32) for _ in range(3)]
    path = plots.plot_spectrograms(
        tmp_path / "spectrograms.png",
        rows,
        ["originals", "reconstructions", "samples"],
        8000,
        column_names=["0", "1", "2", "3"],
    )
    assert figures == [[]] and path.is_file()


@pytest.mark.parametrize("layout", [None, "constrained"])
def test_the_check_sees_overlaps(layout):
    """The overlap check itself, on the grid the loss curves had: two stacked panels 3 inches
    tall collide without a layout engine, and do not with the constrained layout."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(4.5, 6), layout=layout)
    for ax in axes:
        ax.plot([0, 1000], [0, 1])
    axes[0].set_xlabel("step")
    axes[1].set_title("codebook")
    fig.canvas.draw()
    assert _overlaps(fig) == ([("step", "codebook")] if layout is None else [])
    plt.close(fig)
