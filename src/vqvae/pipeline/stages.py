"""The pipeline's stages over a run folder: train → reconstruct → encode → train prior → sample
→ evaluate. Each stage reads the run, looks its model family up once in ``FAMILIES`` and calls
that family's verb (``vqvae.pipeline.families``). The CLI is a thin layer over these functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vqvae import distributed
from vqvae.errors import ConfigError, VQVAEError
from vqvae.pipeline.families import FAMILIES, ModelFamily, SampleOptions
from vqvae.pipeline.run import RunConfig, RunDir, resumed_config, with_prior_settings
from vqvae.training import TrainResult

PREVIEW_PER_CLASS = 8  # samples of each class in RUN/samples.png after train-prior


def family_of(config: RunConfig) -> ModelFamily:
    return FAMILIES.get(config.model.kind, "model.kind")


def _open(run_path: str | Path, spec: str | None) -> tuple[RunDir, RunConfig, ModelFamily, Any]:
    """The run, its config, its family and its data (``spec`` or the run's own)."""
    run = RunDir(run_path)
    config, saved_spec = run.read_config()
    family = family_of(config)
    return run, config, family, family.load_data(spec or saved_spec, config.model)


def _check_count(option: str, n: int) -> None:
    if n < 1:
        raise ConfigError(f"{option} must be >= 1, got {n}")


# --- stage 1: the model ----------------------------------------------------------------------
@dataclass
class TrainSummary:
    run: Path
    result: TrainResult
    metrics: dict[str, float]


def train_vqvae(
    spec: str | None,
    out: str | Path,
    config: RunConfig,
    *,
    resume: bool = False,
    other_data: bool = False,
    show_progress: bool = True,
) -> TrainSummary:
    """Train the model ``config`` describes on ``spec`` into the run folder ``out`` (or
    continue it with ``resume``: the saved config rules, only the budget may change, and the
    run's data too, unless ``other_data`` lets ``spec`` replace it)."""
    run = RunDir(out)
    if resume:
        saved, saved_spec = run.read_config()
        config = resumed_config(saved, config)
        spec = resumed_spec(run, saved_spec, spec, other_data)
        family = family_of(config)
        family.check_data(spec)
        data = family.load_data(spec, config.model)
    elif spec is None:
        raise ConfigError("--data is required to start a run (only --resume reads the run's)")
    else:
        if run.model_dir.exists() or (run.path / "checkpoints").exists():
            raise VQVAEError(
                f"{run.path}: already holds a run; pass --resume or choose a new --out"
            )
        family = family_of(config)
        family.check_data(spec)
        config, data = family.fit_config(spec, config)
    result, metrics = family.train(
        run, config, spec, data, resume=resume, show_progress=show_progress
    )
    return TrainSummary(run.path, result, metrics)


def resumed_spec(run: RunDir, saved: str, given: str | None, other_data: bool) -> str:
    """The data a resumed run continues on: its own, unless ``other_data`` lets ``given``
    replace it. Other data without ``other_data`` is refused (nothing is written)."""
    if given is None or given == saved:
        return saved
    if not other_data:
        raise ConfigError(
            f"--resume: {run.path} was trained on {saved!r}, not {given!r}; leave --data out "
            f"to continue on the run's data, or pass --allow-other-data to continue on {given!r}"
        )
    return given


def reconstruction_metrics(model: Any, part: Any) -> dict[str, float]:
    """Fidelity, codebook health and rate of a trained ``model`` on one split (benchmarks)."""
    return FAMILIES.get(model.config.kind, "model.kind").reconstruction_metrics(model, part)


def reconstruct(run_path: str | Path, spec: str | None, out: str | Path, n: int = 16) -> Path:
    """Write ``n`` test items above their reconstructions (a PNG, a WAV folder, an .npz)."""
    _check_count("--n", n)
    run, _, family, data = _open(run_path, spec)
    model = family.load_model(run)
    originals = family.inputs(data.test)[:n]
    rows = {"original": originals, "reconstruction": family.reconstruct(model, originals)}
    return family.save_outputs(model, out, rows)


# --- the index level -------------------------------------------------------------------------
def encode_dataset(
    run_path: str | Path, spec: str | None, out: str | Path, split: str = "train"
) -> Path:
    run, _, family, data = _open(run_path, spec)
    return family.encode_split(run, data, out, split)


def decode_codes(
    run_path: str | Path, codes_path: str | Path, out: str | Path, n: int = 16
) -> Path:
    """Decode the first ``n`` index maps of a codes file (``vqvae encode``) and write them."""
    _check_count("--n", n)
    run = RunDir(run_path)
    return family_of(run.read_config()[0]).decode_file(run, codes_path, out, n)


def export_onnx(run_path: str | Path, out: str | Path) -> list[Path]:
    """Write the run's model as ``encoder.onnx`` (input -> indices) and ``decoder.onnx``
    (indices -> output) into ``out`` (``vqvae.pipeline.export``)."""
    from vqvae.pipeline.export import export_onnx as export

    run = RunDir(run_path)
    family = family_of(run.read_config()[0])
    return export(family.load_model(run), out, finish=family.finish, what=str(run.path))


# --- stage 2: the prior(s) -------------------------------------------------------------------
def train_prior(
    run_path: str | Path,
    spec: str | None,
    settings: dict[str, Any],
    *,
    resume: bool = False,
    other_data: bool = False,
    show_progress: bool = True,
) -> dict[str, float]:
    """Train the run's prior(s) with the prior ``settings`` (config sections from the CLI's
    config file and overrides) applied to the run's config. ``resume`` continues on the run's
    data unless ``other_data`` lets ``spec`` replace it."""
    if resume:
        run = RunDir(run_path)
        spec = resumed_spec(run, run.read_config()[1], spec, other_data)
    run, config, family, data = _open(run_path, spec)
    config = with_prior_settings(config, settings)
    spec = data.spec
    return family.train_priors(run, config, spec, data, resume=resume, show_progress=show_progress)


def preview_samples(run_path: str | Path) -> Path | None:
    """After ``train-prior`` on an image run: RUN/samples.png, ``PREVIEW_PER_CLASS`` samples
    (of every class, one row each, for a conditional prior). None for other runs, whose
    samples ``vqvae sample`` writes as files of their own kind."""
    config, _ = RunDir(run_path).read_config()
    if not family_of(config).previews or not distributed.is_main_process():
        return None
    return sample(run_path, PREVIEW_PER_CLASS, Path(run_path) / "samples.png")


def sample(
    run_path: str | Path,
    n: int,
    out: str | Path,
    *,
    label: int | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = 0,
    guidance_scale: float | None = None,
    cached: bool = True,
    complete: bool = False,
    decode_steps: int | None = None,
    confidence_noise: float | None = None,
) -> Path:
    """Draw ``n`` samples (codes from the prior(s), decoded; a VAE decodes N(0, I) draws) and
    write them. A conditional prior without ``label`` draws ``n`` samples of every class, one
    row per class. ``complete``: keep the first half of test items' codes, sample the rest."""
    _check_count("--n", n)
    run = RunDir(run_path)
    config, saved_spec = run.read_config()
    family = family_of(config)
    data = family.load_data(saved_spec, config.model) if complete else None
    options = SampleOptions(
        temperature, top_k, top_p, guidance_scale, cached, decode_steps, confidence_noise
    )
    return family.sample(run, n, out, label=label, options=options, seed=seed, data=data)


# --- evaluation ------------------------------------------------------------------------------
def evaluate(
    run_path: str | Path,
    spec: str | None,
    *,
    samples: int = 0,
    classifier_dir: str | Path | None = None,
    sample_options: SampleOptions | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Measure the run on the test split and write RUN/metrics.json. ``samples`` > 0 also
    measures the quality of that many samples."""
    run, _, family, data = _open(run_path, spec)
    return family.evaluate(
        run,
        data,
        samples=samples,
        classifier_dir=classifier_dir,
        options=sample_options or SampleOptions(),
        seed=seed,
    )
