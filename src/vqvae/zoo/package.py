"""Turn a trained run (VQ-VAE + prior) into a shipped model folder (``vqvae.zoo``): the
maintainers' tool; users never need it.

    python -m vqvae.zoo.package runs/mnist --name mnist \\
        --description "MNIST digits: 7×7 codes, K = 512, class-conditional PixelCNN prior" \\
        --command "vqvae train --data mnist:DIR --out runs/mnist \\
                   --config configs/mnist.toml --minutes 10" \\
        --command "vqvae train-prior runs/mnist --config configs/mnist.toml --steps 4000"

Copies the run's config, model and prior(s) with the weights stored as ``vqvae.zoo`` says
(layers in float16, quantizer tensors in float32; ``--fp32`` keeps everything float32),
measures the test metrics of the stored model and of the run's own fp32 weights, and writes
``card.json`` (checksums of every file) and ``README.md``. The folder is written beside its
final place and renamed into it, so an interrupted packaging leaves the old model in place.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from vqvae import configs
from vqvae.errors import VQVAEError
from vqvae.serialization import CONFIG_NAME, WEIGHTS_NAME
from vqvae.threads import cpu_name
from vqvae.zoo import CARD, CLASSIFIER, README, ZOO, load_folder, measure, sha256, verify

# How closely a fresh load must reproduce the card's metrics (tests/zoo): the 0.05 dB
# for images; NLL and usage to rounding of a different machine's float order.
TOLERANCES = {
    "psnr": 0.05,
    "snr_db": 0.05,
    "codebook_usage": 0.005,
    "prior_nll_bits_per_code": 0.01,
    "intelligibility_ratio": 0.01,
}
KEPT_FP32 = "quantizer"  # tensors whose name holds this stay float32 (codebooks, EMA statistics)


def stored_state(path: Path, half: bool) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors as shipped: float16 except quantizer tensors."""
    state = load_file(str(path))
    if not half:
        return state
    return {
        k: v.half() if v.is_floating_point() and KEPT_FP32 not in k else v for k, v in state.items()
    }


def copy_model(src: Path, dst: Path, half: bool) -> None:
    """One saved model folder (config.json + model.safetensors) in its stored form."""
    dst.mkdir(parents=True)
    shutil.copyfile(src / CONFIG_NAME, dst / CONFIG_NAME)
    save_file(stored_state(src / WEIGHTS_NAME, half), str(dst / WEIGHTS_NAME), {"format": "pt"})


def package(
    run: Path,
    name: str,
    *,
    description: str,
    commands: list[str],
    spec: str | None = None,
    half: bool = True,
    root: Path = ZOO,
    notes: str = "",
) -> Path:
    source = load_folder(run, name)
    if not source.priors:
        raise VQVAEError(f"{run}: has no trained prior; a shipped model comes with its prior")
    final = root / name
    tmp = root / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    raw = json.loads((run / CONFIG_NAME).read_text(encoding="utf-8"))
    data_spec = spec or raw["data"]
    (tmp / CONFIG_NAME).write_text(json.dumps(raw, indent=2) + "\n", encoding="utf-8")
    copy_model(run / "model", tmp / "model", half)
    prior_dirs = sorted(p.name for p in run.iterdir() if p.name.startswith("prior") and p.is_dir())
    for prior in prior_dirs:
        if (run / prior / "model" / WEIGHTS_NAME).is_file():
            copy_model(run / prior / "model", tmp / prior / "model", half)
    if (run / CLASSIFIER / WEIGHTS_NAME).is_file() and source.family.ships_classifier:
        copy_model(run / CLASSIFIER, tmp / CLASSIFIER, half=False)  # the measuring instrument
    print(f"measuring the run's fp32 weights on {data_spec} ...", file=sys.stderr)
    fp32 = measure(source, data_spec)
    print("measuring the stored weights ...", file=sys.stderr)
    stored = measure(load_folder(tmp, name), data_spec)
    files = {
        str(p.relative_to(tmp)): {"sha256": sha256(p), "bytes": p.stat().st_size}
        for p in sorted(tmp.rglob("*"))
        if p.is_file()
    }
    card = {
        "name": name,
        "description": description,
        "model_kind": source.config.model.kind,
        "prior_kind": source.config.prior.kind,
        "data": {"spec": data_spec, "metrics_split": "test"},
        "commands": commands,
        "notes": notes,
        "config": configs.to_dict(source.config),
        "storage": {
            "format": "safetensors",
            "dtype": "float16 layers, float32 quantizer tensors" if half else "float32",
            "bytes": sum(f["bytes"] for f in files.values()),
        },
        "metrics": stored,
        "metrics_fp32_weights": fp32,
        "tolerances": {k: v for k, v in TOLERANCES.items() if k in stored},
        "measured": {
            "date": datetime.date.today().isoformat(),
            "torch": torch.__version__,
            "cpu": cpu_name(),
        },
        "files": files,
    }
    (tmp / CARD).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    (tmp / README).write_text(readme(card), encoding="utf-8")
    verify(tmp)
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    return final


def readme(card: dict[str, Any]) -> str:
    """The model card for people."""
    m, f = card["metrics"], card["metrics_fp32_weights"]
    rows = "\n".join(
        f"| {k} | {m[k]:.4g} | {f[k]:.4g} |" for k in sorted(m) if isinstance(m[k], float)
    )
    commands = "\n".join(f"    {c}" for c in card["commands"])
    return f"""# {card["name"]}

{card["description"]}

- Model: `{card["model_kind"]}`; prior: `{card["prior_kind"]}`. Full configuration: `config.json`
  (also in `card.json`).
- Data: `{card["data"]["spec"]}`; metrics on its test split.
- Stored as {card["storage"]["format"]}, {card["storage"]["dtype"]}
  ({card["storage"]["bytes"]:,} bytes); loaded as float32.
- Measured {card["measured"]["date"]} with torch {card["measured"]["torch"]} on
  {card["measured"]["cpu"]}.

Reproduce:

{commands}

{card["notes"]}

| metric (test split) | stored model | fp32 weights before storage |
|---|---|---|
{rows}

Load it: `vqvae.pretrained("{card["name"]}")`, or `--pretrained {card["name"]}` on the command line.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--name", required=True)
    parser.add_argument("--description", required=True)
    parser.add_argument("--command", action="append", required=True, dest="commands")
    parser.add_argument("--data", help="data spec to measure on (default: the run's)")
    parser.add_argument("--notes", default="")
    parser.add_argument("--fp32", action="store_true", help="store float32 weights")
    parser.add_argument("--root", type=Path, default=ZOO)
    args = parser.parse_args(argv)
    try:
        path = package(
            args.run,
            args.name,
            description=args.description,
            commands=args.commands,
            spec=args.data,
            half=not args.fp32,
            root=args.root,
            notes=args.notes,
        )
    except VQVAEError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    card = json.loads((path / CARD).read_text())
    print(path)
    for key in sorted(card["metrics"]):
        stored, fp32 = card["metrics"][key], card["metrics_fp32_weights"][key]
        print(f"  {key:28s} {stored:.4f}  (fp32 weights {fp32:.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
