"""``vqvae demo``: the whole pipeline on scikit-learn's bundled 8×8 digits, in a few minutes."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from vqvae.errors import VQVAEError
from vqvae.pipeline import stages
from vqvae.pipeline.run import resolve_config

# 8×8 images, 2× downsampling -> 4×4 code maps of K = 32 codes (80 bits per image). The set is
# small (1,497 training images), so the prior is kept short and regularised: longer training
# overfits (held-out NLL rises).
DEMO_CONFIG: dict[str, Any] = {
    "model": {
        "downsample": 2,
        "hidden": 64,
        "res_hidden": 32,
        "quantizer": {"codebook_size": 32, "dim": 32},
    },
    "train": {"steps": 1500, "batch_size": 64, "lr": 2e-3, "log_every": 20},
    "prior": {"channels": 64, "layers": 6, "kernel_size": 3, "dropout": 0.2},
    "prior_train": {"steps": 400, "batch_size": 64, "lr": 2e-3, "log_every": 20},
}


def run_demo(out: str | Path, overrides: list[str], show_progress: bool = True) -> dict[str, Any]:
    config = resolve_config(None, overrides, base=DEMO_CONFIG, data="digits")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not (out / "config.json").is_file():
            raise VQVAEError(f"{out}: exists and is not a run folder; choose another --out")
        shutil.rmtree(out)  # a previous demo run: start afresh so the demo can be re-run
    stages.train_vqvae("digits", out, config, show_progress=show_progress)
    stages.train_prior(out, None, {}, show_progress=show_progress)
    stages.sample(out, 10, out / "samples.png")
    return stages.evaluate(out, None)
