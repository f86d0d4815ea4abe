"""The model-family seam: every verb of the pipeline, declared once with one signature.

A family (image VQ-VAE, VQ-VAE-2, Gaussian VAE, audio, vectors) is one ``ModelFamily``
subclass registered under its ``model.kind`` in ``FAMILIES``; the stages
(``vqvae.pipeline.stages``) look the family up once and call these verbs. What a family must
say of itself is small — how to read its data and fit the model config to it, what its items
are, how to measure a reconstruction, how to write its outputs (a PNG grid, WAV files, arrays)
— and what every family shares is written here once: training, the code levels and their
cache, encode/decode/reconstruct, training the prior(s), sampling, prior NLL and evaluation.

The index level is described by ``CodeLevel``s: one per code map an item is encoded to (a
VQ-VAE has one, VQ-VAE-2 a top and a bottom map whose prior is conditioned on the top codes, a
Gaussian VAE none). ``code_levels`` and ``prior_logits`` give a codec (issue #9) what it needs.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqvae import configs, distributed
from vqvae.data import default_model_kind, load_codes, save_codes
from vqvae.errors import ConfigError, VQVAEError
from vqvae.files import atomic_write_text
from vqvae.memory import check_fits
from vqvae.metrics import code_histogram, codebook_stats, nll_bits
from vqvae.models import build_model, load_model
from vqvae.pipeline import plots
from vqvae.priors import PRIORS, Prior, load_prior
from vqvae.priors.maskgit import EVAL_MASK_RATIOS
from vqvae.registry import Registry
from vqvae.training import (
    ShuffledBatches,
    TrainConfig,
    TrainingInterrupted,
    TrainResult,
    as_float,
    fit,
    latest_checkpoint,
    read_log,
    verify_checkpoint,
)

if TYPE_CHECKING:  # the run layer imports the families' registry, not the other way round
    from vqvae.pipeline.run import RunConfig, RunDir


@dataclass(frozen=True)
class CodeLevel:
    """One code map an item is encoded to, and where its prior lives."""

    name: str  # "" for a family's only level; "top" / "bottom" for VQ-VAE-2
    codebook_size: int
    shape: tuple[int, ...]  # one item's indices: (h, w), (T,), or (L, h, w) / (L, T) residual
    # > 0: L stacked residual maps. A prior models a stack of sequences (L, T) as a 2D map,
    # levels as rows: raster order is level-major, so the first k levels are a prefix of it
    # and their codes cost exactly what the prior's first k·T conditionals say (the codec's
    # --levels). Stacks of 2D maps (L, h, w) have no prior.
    residual_levels: int = 0
    section: str = "prior"  # the RunConfig section that configures this level's prior
    conditioned_on: int | None = None  # the level whose codes condition this level's prior


@dataclass
class SampleOptions:
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    guidance_scale: float | None = None
    cached: bool = True
    steps: int | None = None  # decoding steps of a parallel-decoding prior (MaskGIT)
    confidence_noise: float | None = None  # its confidence noise (None: its config's)

    def kwargs(self, prior: Any = None) -> dict[str, Any]:
        """``sample``'s options for ``prior``: ``steps`` and ``confidence_noise`` only for one
        that decodes in steps."""
        kwargs = {
            "temperature": self.temperature,
            "top_k": self.top_k,
            "top_p": self.top_p,
            "guidance_scale": self.guidance_scale,
            "cached": self.cached,
        }
        if getattr(prior, "parallel_steps", False):
            parallel = {"steps": self.steps, "confidence_noise": self.confidence_noise}
            kwargs.update((k, v) for k, v in parallel.items() if v is not None)
        return kwargs


@dataclass
class SplitCodes:
    """One split's codes, one (N, *level.shape) array per level, and its labels."""

    levels: list[np.ndarray]
    labels: np.ndarray | None


class ModelFamily:
    """Base class of the families: the shared verbs, and the hooks a family fills in."""

    kind: str  # model.kind
    title: str  # in figure titles
    loss_keys: tuple[str, ...] = ("train/loss", "train/recon", "train/perplexity")
    batch = 500  # items per encode/decode/evaluation batch
    sample_batch = 250  # items per sampling call
    min_samples = 1  # evaluate --samples: the fewest samples the score is defined for
    can_complete = False  # sample --complete (keep the first half of each map's codes)
    previews = False  # train-prior writes RUN/samples.png

    def check_data(self, spec: str) -> None:
        """Refuse data that selects another family (audio data: the audio model)."""
        selects = default_model_kind(spec)
        if selects is not None and selects != self.kind:
            raise ConfigError(
                f"{spec}: {selects} data needs model.kind = {selects!r}, not {self.kind!r}"
            )

    # --- hooks: data ------------------------------------------------------------------------
    def load_data(self, spec: str, model_config: Any) -> Any:
        """The splits of ``spec`` as this model reads them."""
        raise NotImplementedError

    def fit_config(self, spec: str, config: RunConfig) -> tuple[RunConfig, Any]:
        """``config`` with the model settings left None taken from the data, and the data."""
        raise NotImplementedError

    def inputs(self, part: Any, model: nn.Module | None = None) -> np.ndarray:
        """One split's items as the model's encoder takes them."""
        raise NotImplementedError

    def training_tensors(self, data: Any) -> tuple[Tensor | None, ...]:
        """What the model's ``training_losses`` reads, for every item of the training split."""
        return as_float(self.inputs(data.train)), _labels(data.train)

    # --- hooks: results ---------------------------------------------------------------------
    def fidelity(self, model: nn.Module, part: Any, outputs: np.ndarray) -> dict[str, float]:
        """How close ``outputs`` (the reconstructions of ``part``) are to it."""
        raise NotImplementedError

    def depth_fidelity(self, model: nn.Module, part: Any, outputs: np.ndarray) -> dict[str, float]:
        """What ``evaluate`` measures of the outputs decoded from each depth of a residual
        stack (``depth_metrics``): ``fidelity``, and whatever slower measures of outputs a
        family adds (the audio family's PESQ and STOI)."""
        return self.fidelity(model, part, outputs)

    def rates(self, model: nn.Module) -> dict[str, float]:
        """What the codes cost (bits per image / per second / per vector)."""
        return {}

    def item_sizes(self, model: nn.Module) -> dict[str, float]:
        """Units one item holds, for prior NLL per unit: {"dim": C·H·W} or {"second": …}."""
        return {}

    def save_outputs(self, model: nn.Module, out: str | Path, rows: dict[str, np.ndarray]) -> Path:
        """Write named rows of outputs (originals, reconstructions, samples of a class…)."""
        raise NotImplementedError

    def write_examples(self, run: RunDir, model: nn.Module, data: Any) -> None:
        """After training: a few test items beside their reconstructions."""
        raw = self.inputs(data.test)[:10]
        self.save_outputs(model, run.path / "reconstructions.png", {
            "original": raw, "reconstruction": self.reconstruct(model, raw)
        })  # fmt: skip

    def extra_metrics(
        self, run: RunDir, model: nn.Module, data: Any, classifier_dir: str | Path | None
    ) -> dict[str, Any]:
        """Family-specific measurements of ``evaluate`` (intelligibility, probes…)."""
        return {}

    # A shipped model (vqvae.zoo) of this family carries the run's classifier, whose figures
    # its card records (shipped_classifier_metrics).
    ships_classifier = False

    def shipped_classifier_metrics(
        self, model: nn.Module, data: Any, classifier_dir: Path
    ) -> dict[str, float]:
        """Measurements made with a classifier shipped beside a model (``vqvae.zoo``): the
        audio family's intelligibility; none for the others."""
        return {}

    def score_samples(
        self,
        run: RunDir,
        model: nn.Module,
        samples: np.ndarray,
        labels: Tensor | None,
        data: Any,
        classifier_dir: str | Path | None,
        seed: int,
    ) -> dict[str, float]:
        raise VQVAEError(f"model.kind = {self.kind!r}: no sample-quality measure")

    def class_names(self, run: RunDir, count: int) -> list[str]:
        return [str(c) for c in range(count)]

    # --- the model --------------------------------------------------------------------------
    def build(self, config: RunConfig, data: Any) -> nn.Module:
        return build_model(config.model)

    def load_model(self, run: RunDir) -> nn.Module:
        return load_model(run.require_model()).eval()

    def code_levels(self, model: nn.Module) -> list[CodeLevel]:
        """The code maps an item is encoded to ([] for a model without codes): by default the
        one map of ``model.quantizer`` on ``code_grid`` ((L, *grid) for L residual levels)."""
        q = model.quantizer
        shape = (
            (q.index_levels, *self.code_grid(model)) if q.index_levels else self.code_grid(model)
        )
        return [CodeLevel("", q.codebook_size, tuple(shape), q.index_levels)]

    def code_grid(self, model: nn.Module) -> tuple[int, ...]:
        """The positions of one item's code map: (h, w) for images, (T',) for sequences."""
        raise NotImplementedError

    # --- stage 1 ----------------------------------------------------------------------------
    def train(
        self,
        run: RunDir,
        config: RunConfig,
        spec: str,
        data: Any,
        *,
        resume: bool,
        show_progress: bool,
    ) -> tuple[TrainResult, dict[str, float]]:
        """Train the model on ``data`` in ``run``; rank 0 saves it and measures it."""
        check_fits(lambda: build_model(config.model), "model")  # before any memory is taken
        torch.manual_seed(config.train.seed)  # the initial weights are part of the run
        model = self.build(config, data)  # validates the config before anything is written
        if resume and (ckpt := latest_checkpoint(run.path / "checkpoints")) is not None:
            verify_checkpoint(ckpt, model)  # a corrupt or foreign checkpoint: write nothing
        main = distributed.is_main_process()
        distributed.barrier()  # every rank has checked the run before rank 0 writes to it
        if main:
            run.path.mkdir(parents=True, exist_ok=True)
            run.write_config(config, spec)
        result = fit_on_device(
            model,
            self.training_tensors(data),
            config.train,
            run_dir=run.path,
            resume=resume,
            desc=self.kind,
            show_progress=show_progress,
        )
        if not main:
            return result, {}
        model.save_pretrained(run.model_dir)
        if result.interrupted:  # stop promptly: the checkpoint is saved, --resume continues
            return result, {}
        metrics = self.reconstruction_metrics(model, data.test)
        self.write_training_pictures(run, model, data)
        return result, metrics

    def write_training_pictures(self, run: RunDir, model: nn.Module, data: Any) -> None:
        self.write_examples(run, model, data)
        codes = self.encode(model, self.inputs(data.test)) if self.code_levels(model) else []
        for level, counts in self.code_histograms(model, codes):
            suffix = f"_{level.name}" if level.name and level.name != "bottom" else ""
            title = f"{level.name} code usage on the test split".lstrip()
            if level.residual_levels:
                title += f" ({level.residual_levels} levels side by side)"
            plots.plot_codebook_usage(
                run.path / f"codebook_usage{suffix}.png", counts.numpy(), title
            )
        log = read_log(run.path / "log.jsonl")
        plots.plot_loss_curves(run.path / "loss_curves.png", log, list(self.loss_keys), self.title)

    # --- the index level --------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, model: nn.Module, inputs: np.ndarray) -> list[np.ndarray]:
        """Items -> their codes, one (N, *level.shape) int64 array per level."""
        model.eval()
        batches = []
        for i in range(0, len(inputs), self.batch):
            codes = model.encode(as_float(inputs[i : i + self.batch]))
            batches.append(codes if isinstance(codes, tuple) else (codes,))
        return [torch.cat(level).numpy() for level in zip(*batches, strict=True)]

    @torch.no_grad()
    def decode(self, model: nn.Module, codes: list[np.ndarray]) -> np.ndarray:
        """Codes (one array per level) -> outputs, in batches."""
        model.eval()
        out = [
            self.finish(
                model.decode_indices(*(torch.from_numpy(c[i : i + self.batch]) for c in codes))
            )
            for i in range(0, len(codes[0]), self.batch)
        ]
        return torch.cat(out).numpy()

    def finish(self, decoded: Tensor) -> Tensor:
        """The decoder's output as this family's outputs (images clamped to [0, 1]…)."""
        return decoded

    def reconstruct(self, model: nn.Module, inputs: np.ndarray) -> np.ndarray:
        return self.decode(model, self.encode(model, inputs))

    def reconstruction_metrics(self, model: nn.Module, part: Any) -> dict[str, float]:
        """Fidelity, codebook health of every level, and the rate, on ``part``."""
        levels = self.code_levels(model)
        inputs = self.inputs(part, model)
        codes = self.encode(model, inputs) if levels else []
        outputs = self.decode(model, codes) if levels else self.reconstruct(model, inputs)
        metrics = self.fidelity(model, part, outputs)
        for level, counts in self.code_histograms(model, codes):
            health = codebook_stats(counts, max(1, level.residual_levels))
            prefix = f"{level.name}_" if level.name == "top" else ""
            metrics.update({prefix + k: v for k, v in health.items()})
            if not level.name:
                metrics["codebook_size"] = level.codebook_size
        return {**metrics, **self.rates(model)}

    def code_histograms(
        self, model: nn.Module, codes: list[np.ndarray]
    ) -> list[tuple[CodeLevel, Tensor]]:
        """Each level with the histogram of its codes (residual levels side by side)."""
        return [
            (level, code_histogram(torch.from_numpy(c), level.codebook_size, level.residual_levels))
            for level, c in zip(self.code_levels(model), codes, strict=True)
        ]

    def split_codes(self, run: RunDir, model: nn.Module, data: Any, split: str) -> SplitCodes:
        """The run's codes of ``split``, from RUN/codes/ or encoded (and cached there) when the
        model is newer than the cache or it was made from other data. Rank 0 fills the cache;
        the other ranks read what it wrote."""
        part = getattr(data, split)
        levels = self.code_levels(model)
        paths = [run.codes_file(split, level.name) for level in levels]
        if distributed.is_main_process():
            weights = (run.model_dir / "model.safetensors").stat().st_mtime
            fresh = all(p.is_file() and p.stat().st_mtime >= weights for p in paths)
            cached = [load_codes(p) for p in paths] if fresh else []
            if not fresh or any(
                c.meta.get("data") != data.spec or len(c) != len(part) for c in cached
            ):
                meta = {"split": split, "data": data.spec, **self.codes_meta(model, part)}
                codes = self.encode(model, self.inputs(part, model))
                for path, level, level_codes in zip(paths, levels, codes, strict=True):
                    save_codes(path, level_codes, part.labels, level.codebook_size, meta)
        distributed.barrier()
        return SplitCodes([load_codes(p).indices for p in paths], part.labels)

    def codes_meta(self, model: nn.Module, part: Any) -> dict[str, Any]:
        """What a codes file records besides the split and the data spec."""
        return {}

    def encode_split(self, run: RunDir, data: Any, out: str | Path, split: str) -> Path:
        """Write the codes of one split to a codes file (``vqvae encode``)."""
        model = self.load_model(run)
        levels = self.code_levels(model)
        if len(levels) != 1:
            raise VQVAEError(
                f"{run.path}: `encode` writes one code map per item; model.kind = "
                f"{self.kind!r} has {len(levels) or 'no'} code maps"
            )
        part = getattr(data, split)
        (codes,) = self.encode(model, self.inputs(part, model))
        meta = {"split": split, "data": data.spec, "grid": list(codes.shape[1:])}
        save_codes(
            out,
            codes,
            part.labels,
            levels[0].codebook_size,
            {**meta, **self.codes_meta(model, part)},
        )
        return Path(out)

    def decode_file(self, run: RunDir, codes_path: str | Path, out: str | Path, n: int) -> Path:
        """Decode the first ``n`` items of a codes file (``vqvae encode``) and write them."""
        model = self.load_model(run)
        levels = self.code_levels(model)
        if len(levels) != 1:
            raise VQVAEError(f"{run.path}: `decode` reads one code map per item")
        indices = load_codes(codes_path).indices[:n]
        if indices.size and int(indices.max()) >= levels[0].codebook_size:
            raise VQVAEError(
                f"{codes_path}: index {int(indices.max())} is out of range for the model's "
                f"codebook of {levels[0].codebook_size} codes"
            )
        if tuple(indices.shape[1:]) != levels[0].shape:
            raise VQVAEError(
                f"{codes_path}: index maps of shape {tuple(indices.shape[1:])}, the model's "
                f"are {levels[0].shape}"
            )
        return self.save_outputs(model, out, {"decoded": self.decode(model, [indices])})

    # --- stage 2: the prior(s) --------------------------------------------------------------
    def prior_levels(self, run: RunDir, model: nn.Module) -> list[CodeLevel]:
        """The levels a prior models; an error for a model a prior cannot follow."""
        levels = self.code_levels(model)
        if not levels:
            raise VQVAEError(
                f"{run.path}: model.kind = {self.kind!r} has no codes, so no prior to train or "
                "sample from"
            )
        for level in levels:
            if level.residual_levels and len(level.shape) > 2:
                raise VQVAEError(
                    f"{run.path}: a prior models one 2D map per item (a residual stack of "
                    f"sequences, (L, T), is one), but this run's residual quantizer gives "
                    f"{level.residual_levels} maps of {level.shape[1:]} (indices (N, L, h, w))"
                )
        return levels

    def train_priors(
        self,
        run: RunDir,
        config: RunConfig,
        spec: str,
        data: Any,
        *,
        resume: bool,
        show_progress: bool,
    ) -> dict[str, float]:
        """Train one prior per code level (a lower level's conditioned on the level above it)
        in RUN/prior*/; rank 0 saves them and the config that built them, and measures them."""
        model = self.load_model(run)
        levels = self.prior_levels(run, model)
        train, test = (self.split_codes(run, model, data, s) for s in ("train", "test"))
        conditional = config.conditional_prior and train.labels is not None
        num_classes = int(data.train.num_classes or 0) if conditional else 0
        labels = torch.from_numpy(train.labels.astype(np.int64)) if conditional else None
        torch.manual_seed(config.prior_train.seed)
        priors = []
        for level in levels:
            items = len(train.levels[0])
            config, prior = self._fitted_prior(config, level, levels, num_classes, items)
            priors.append(prior)
        for j, (level, prior) in enumerate(zip(levels, priors, strict=True)):
            tensors = (torch.from_numpy(train.levels[j]), labels)
            if level.conditioned_on is not None:
                tensors += (torch.from_numpy(train.levels[level.conditioned_on]),)
            result = self._fit_prior(
                run, level, prior, tensors, config.prior_train, resume, show_progress
            )
            if result.interrupted:  # stop promptly: the checkpoint is saved, --resume continues
                name = f"{level.name} prior".lstrip()
                raise TrainingInterrupted(name, result, f"vqvae train-prior {run.path} --resume")
        if not distributed.is_main_process():
            return {}  # rank 0 measures the priors
        run.write_config(config, spec)
        for prior in priors:  # measured as evaluate measures them: dropout off
            prior.eval()
        return self.prior_metrics(model, priors, test)

    def _fit_prior(
        self, run, level, prior, tensors, train_config, resume, show_progress
    ) -> TrainResult:
        """Train one level's prior in its folder (a new prior replaces an old one; ``resume``
        continues it after checking its checkpoint fits); rank 0 saves a finished one and its
        curves (an interrupted one is in its checkpoint)."""
        directory = run.prior_dir(level.name)
        if resume and (ckpt := latest_checkpoint(directory / "checkpoints")) is not None:
            verify_checkpoint(ckpt, prior)
        main = distributed.is_main_process()
        if main and not resume and directory.exists():
            shutil.rmtree(directory)
        distributed.barrier()  # no rank trains before rank 0 has cleared the folder
        name = f"{level.name} prior".lstrip()
        result = fit_on_device(
            prior,
            tensors,
            train_config,
            run_dir=directory,
            resume=resume,
            desc=name,
            show_progress=show_progress,
        )
        if main and not result.interrupted:
            prior.save_pretrained(directory / "model")
            curves = run.path / f"{directory.name}_loss_curves.png"  # prior_, prior_bottom_
            keys = ["train/loss", "train/bits_per_code", "train/masked_bits_per_code", "train/lr"]
            plots.plot_loss_curves(curves, read_log(directory / "log.jsonl"), keys, name)
        return result

    def _fitted_prior(
        self,
        config: RunConfig,
        level: CodeLevel,
        levels: list[CodeLevel],
        num_classes: int,
        train_items: int | None = None,
    ) -> tuple[RunConfig, Prior]:
        """The prior of ``level`` with the sizes only the codes and the data know filled in
        (its size, when not set, from the grid, K and the ``train_items`` training maps), and
        the run config with that section updated (it is saved with the run)."""
        section = getattr(config, level.section)
        cls = PRIORS.get(section.kind, f"{level.section}.kind")
        cond = levels[level.conditioned_on].codebook_size if level.conditioned_on is not None else 0
        filled = cls.fitted_config(
            section,
            grid=level.shape,
            codebook_size=level.codebook_size,
            num_classes=num_classes,
            cond_codebook_size=cond,
            train_items=train_items,
        )
        check_fits(lambda: cls(filled), level.section)
        return configs.replace(config, "config", **{level.section: filled}), cls(filled)

    def load_priors(self, run: RunDir, model: nn.Module) -> list[Prior]:
        return [
            load_prior(run.require_prior(level.name)).eval()
            for level in self.prior_levels(run, model)
        ]

    def has_priors(self, run: RunDir, model: nn.Module) -> bool:
        levels = self.code_levels(model)
        return bool(levels) and all(
            (run.prior_dir(level.name) / "model" / "model.safetensors").is_file()
            for level in levels
        )

    @torch.no_grad()
    def prior_logits(
        self,
        model: nn.Module,
        priors: list[Prior],
        codes: list[Tensor],
        labels: Tensor | None,
    ) -> list[Tensor]:
        """Each level's conditional logits (B, K, *grid) for the given codes: what an entropy
        coder needs, position by position, and what the NLL is computed from. Only priors
        with an exact likelihood (``Prior.exact_likelihood``) have them; a MaskGIT prior is
        refused."""
        levels = self.code_levels(model)
        for level, prior in zip(levels, priors, strict=True):
            if not prior.exact_likelihood:
                where = f"{level.section}.kind = {prior.config.kind!r}"
                raise VQVAEError(
                    f"{where} has no exact likelihood (conditional logits of one "
                    "factorisation); train an autoregressive prior (pixelcnn, transformer)"
                )
        return [
            prior(c, labels, None if level.conditioned_on is None else codes[level.conditioned_on])
            for level, prior, c in zip(levels, priors, codes, strict=True)
        ]

    @torch.no_grad()
    def prior_metrics(
        self, model: nn.Module, priors: list[Prior], test: SplitCodes
    ) -> dict[str, float]:
        """Held-out NLL: bits per code (per level, and over all), per unit of the input. A
        level whose prior has no exact likelihood (MaskGIT) reports the masked-token
        cross-entropy at ``EVAL_MASK_RATIOS`` instead (``prior[_LEVEL]_masked_bits_per_code_
        at_PCT``: bits per masked code with PCT% of each map masked, the masks drawn from seed
        0), and then no figure over all levels is given."""
        levels = self.code_levels(model)
        labels = test.labels if priors[0].config.num_classes else None
        bits = [0.0] * len(levels)
        masked = {  # (level, mask ratio) -> [bits, masked codes]
            (j, r): [0.0, 0]
            for j, prior in enumerate(priors)
            if not prior.exact_likelihood
            for r in EVAL_MASK_RATIOS
        }
        masks_from = torch.Generator().manual_seed(0)
        n = len(test.levels[0])
        for i in range(0, n, self.batch):
            codes = [torch.from_numpy(c[i : i + self.batch]) for c in test.levels]
            lab = (
                None
                if labels is None
                else torch.from_numpy(labels[i : i + self.batch].astype(np.int64))
            )
            for j, (level, prior) in enumerate(zip(levels, priors, strict=True)):
                if prior.exact_likelihood:
                    cond = None if level.conditioned_on is None else codes[level.conditioned_on]
                    bits[j] += float(nll_bits(prior(codes[j], lab, cond), codes[j]))
            for (j, r), total in masked.items():
                b, count = priors[j].masked_bits(codes[j], lab, r, masks_from)
                total[0] += b
                total[1] += count
        metrics = {}
        if masked:
            named = len(levels) > 1
            for (j, r), (b, count) in masked.items():
                what = f"masked_bits_per_code_at_{round(100 * r)}"
                metrics[f"prior_{levels[j].name}_{what}" if named else f"prior_{what}"] = b / count
            for level, prior, b, c in zip(levels, priors, bits, test.levels, strict=True):
                if prior.exact_likelihood:
                    metrics[f"prior_{level.name}_nll_bits_per_code"] = b / c.size
            return metrics
        total_codes = sum(c.size for c in test.levels)
        if len(levels) > 1:
            for level, b, c in zip(levels, bits, test.levels, strict=True):
                metrics[f"prior_{level.name}_nll_bits_per_code"] = b / c.size
        metrics["prior_nll_bits_per_code"] = sum(bits) / max(1, total_codes)
        for unit, size in self.item_sizes(model).items():
            metrics[f"prior_nll_bits_per_{unit}"] = sum(bits) / (n * size)
        if len(levels) == 1:
            metrics["prior_uniform_bits_per_code"] = math.log2(levels[0].codebook_size)
        return metrics

    # --- sampling ---------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        model: nn.Module,
        priors: list[Prior],
        n: int,
        labels: Tensor | None,
        options: SampleOptions,
        generator: torch.Generator,
        prefix: list[Tensor] | None = None,
    ) -> np.ndarray:
        """``n`` outputs: codes drawn level by level from the priors, decoded. ``prefix``:
        codes kept fixed (one tensor per level, whole rows) — completion."""
        levels = self.code_levels(model)
        if not any(p.parallel_steps for p in priors):
            for given, flag in (
                (options.steps, "decode-steps"),
                (options.confidence_noise, "confidence-noise"),
            ):
                if given is not None:
                    raise ConfigError(
                        f"--{flag} needs a parallel-decoding prior (prior.kind=maskgit)"
                    )
        out = []
        for i in range(0, n, self.sample_batch):
            m = min(self.sample_batch, n - i)
            lab = None if labels is None else labels[i : i + m]
            codes: list[Tensor] = []
            for j, (level, prior) in enumerate(zip(levels, priors, strict=True)):
                codes.append(
                    prior.sample(
                        m,
                        level.shape,
                        lab,
                        prefix=None if prefix is None else prefix[j][i : i + m],
                        cond=None if level.conditioned_on is None else codes[level.conditioned_on],
                        generator=generator,
                        **options.kwargs(prior),
                    )
                )
            out.append(self.finish(model.decode_indices(*codes)))
        return torch.cat(out).numpy()

    def sample(
        self,
        run: RunDir,
        n: int,
        out: str | Path,
        *,
        label: int | None,
        options: SampleOptions,
        seed: int,
        data: Any = None,
    ) -> Path:
        """Draw ``n`` samples (``n`` of every class for a conditional prior without ``label``,
        one row each) and write them. With ``data``: complete the first half of the codes of
        ``n`` test items instead (rows: originals, reconstructions, three completions)."""
        model = self.load_model(run)
        priors = self.load_priors(run, model) if self.code_levels(model) else []
        classes = priors[0].config.num_classes if priors else 0
        if label is not None and not classes:
            raise ConfigError("--label given but the prior is unconditional")
        if label is not None and not 0 <= label < classes:
            raise ConfigError(f"--label must be in [0, {classes}), got {label}")
        g = torch.Generator().manual_seed(seed)
        if data is not None:
            return self._complete(model, priors, n, out, options, g, data, classes)
        if label is not None:
            wanted = [label]
        else:
            wanted = list(range(classes))
            unconditional = all(p.null_label is not None for p in priors)  # every level's
            if not classes or (unconditional and options.guidance_scale is None):
                wanted.append(None)  # unconditional samples too (no guidance without a class)
        names = self.class_names(run, classes)
        rows = {}
        for c in wanted:
            labels = None if c is None else torch.full((n,), c)
            rows[f"sample_{'unconditional' if c is None else names[c]}"] = self.generate(
                model, priors, n, labels, options, g
            )
        return self.save_outputs(model, out, rows)

    def _complete(self, model, priors, n, out, options, g, data, classes) -> Path:
        if not self.can_complete or not priors:
            raise ConfigError(
                f"--complete needs a code map to complete (model.kind = {self.kind!r})"
            )
        inputs = self.inputs(data.test, model)[:n]
        codes = [torch.from_numpy(c) for c in self.encode(model, inputs)]
        prefix = [c[:, : c.shape[1] // 2] for c in codes]  # the first half of each map's rows
        labels = None
        if classes and data.test.labels is not None:
            labels = torch.from_numpy(data.test.labels[: len(inputs)].astype(np.int64))
        rows = {
            "original": inputs,
            "reconstruction": self.decode(model, [c.numpy() for c in codes]),
        }
        for k in range(3):
            rows[f"completion_{k}"] = self.generate(
                model, priors, len(inputs), labels, options, g, prefix
            )
        return self.save_outputs(model, out, rows)

    # --- evaluation -------------------------------------------------------------------------
    def evaluate(
        self,
        run: RunDir,
        data: Any,
        *,
        samples: int,
        classifier_dir: str | Path | None,
        options: SampleOptions,
        seed: int,
    ) -> dict[str, Any]:
        """Measure the run on the test split (and ``samples`` samples) into RUN/metrics.json."""
        model = self.load_model(run)
        metrics: dict[str, Any] = self.reconstruction_metrics(model, data.test)
        metrics.update(self.extra_metrics(run, model, data, classifier_dir))
        priors = []
        if self.has_priors(run, model):
            priors = self.load_priors(run, model)
            metrics.update(
                self.prior_metrics(model, priors, self.split_codes(run, model, data, "test"))
            )
        metrics.update(self.depth_metrics(model, data.test, priors))
        if samples:
            metrics.update(
                self.sample_quality(
                    run, model, priors, data, samples, classifier_dir, options, seed
                )
            )
        metrics["data"] = data.spec
        atomic_write_text(run.metrics_file, json.dumps(metrics, indent=2) + "\n")
        return metrics

    @torch.no_grad()
    def depth_metrics(self, model: nn.Module, part: Any, priors: list[Prior]) -> dict[str, float]:
        """For a model whose one code level is a residual stack of L levels, each depth k =
        1..L (quantizer dropout trains one model for all of them): ``depth_fidelity`` of the
        outputs decoded from the first k levels as ``levels_{k}_<metric>``, the raw rates at
        k levels (``levels_{k}_bitrate_bps``: rates grow linearly in k) and, with an exact
        prior, the held-out NLL of the first k levels per unit (``levels_{k}_prior_nll_bits_
        per_second``: what ``compress --levels k`` costs, give or take the archive's few bytes
        an item). Nothing for other models."""
        levels = self.code_levels(model)
        if len(levels) != 1 or not levels[0].residual_levels:
            return {}
        depth = levels[0].residual_levels
        (codes,) = self.encode(model, self.inputs(part, model))  # (N, L, ...)
        rates = {k: v for k, v in self.rates(model).items() if k.startswith("bit")}
        metrics: dict[str, float] = {}
        for k in range(1, depth + 1):
            fidelity = self.depth_fidelity(model, part, self.decode(model, [codes[:, :k]]))
            metrics.update({f"levels_{k}_{name}": v for name, v in fidelity.items()})
            metrics.update({f"levels_{k}_{name}": v * k / depth for name, v in rates.items()})
        if not priors or not priors[0].exact_likelihood:
            return metrics
        conditional = priors[0].config.num_classes and part.labels is not None
        bits = np.zeros(depth)  # per level, over the split
        for i in range(0, len(codes), self.batch):
            c = torch.from_numpy(codes[i : i + self.batch])
            lab = (
                torch.from_numpy(part.labels[i : i + len(c)].astype(np.int64))
                if conditional
                else None
            )
            (logits,) = self.prior_logits(model, priors, [c], lab)  # (B, K, L, ...)
            nats = F.cross_entropy(logits, c, reduction="none")  # (B, L, ...)
            bits += nats.transpose(0, 1).flatten(1).sum(1).double().numpy() / math.log(2)
        for unit, size in self.item_sizes(model).items():
            for k, total in enumerate(np.cumsum(bits), start=1):
                metrics[f"levels_{k}_prior_nll_bits_per_{unit}"] = float(total) / (
                    len(codes) * size
                )
        return metrics

    def sample_quality(self, run, model, priors, data, n, classifier_dir, options, seed) -> dict:
        """Draw ``n`` samples (balanced over the classes of a conditional prior) and score them
        (``score_samples``)."""
        if n < self.min_samples:
            raise VQVAEError(f"--samples must be >= {self.min_samples}, got {n}")
        if self.code_levels(model) and not priors:
            raise VQVAEError(f"{run.path}: --samples needs a prior; run `vqvae train-prior` first")
        classes = priors[0].config.num_classes if priors else 0
        labels = torch.arange(n) % classes if classes else None
        g = torch.Generator().manual_seed(seed)
        samples = self.generate(model, priors, n, labels, options, g)
        metrics = {"sample_count": n}
        metrics.update(self.score_samples(run, model, samples, labels, data, classifier_dir, seed))
        if options.guidance_scale is not None:
            metrics["sample_guidance_scale"] = options.guidance_scale
        if options.temperature != 1.0:
            metrics["sample_temperature"] = options.temperature
        return metrics


def _labels(part: Any) -> Tensor | None:
    return None if part.labels is None else torch.from_numpy(part.labels.astype(np.int64))


def fit_on_device(
    model: nn.Module,
    tensors: tuple[Tensor | None, ...],
    config: TrainConfig,
    *,
    run_dir: str | Path,
    resume: bool,
    desc: str,
    show_progress: bool,
) -> TrainResult:
    """Train ``model`` on shuffled batches of ``tensors`` on this process's device, then move
    it back to the CPU (where it is saved and measured)."""
    batches = ShuffledBatches(tensors, config.batch_size, config.seed)
    device = distributed.local_device()
    result = fit(
        model.to(device),
        batches,
        config,
        run_dir=run_dir,
        resume=resume,
        desc=desc,
        show_progress=show_progress,
    )
    model.cpu()
    return result


FAMILIES: Registry[ModelFamily] = Registry("model family")


def register_family(family: type[ModelFamily]) -> type[ModelFamily]:
    """Class decorator: register one instance of ``family`` under its ``kind``."""
    FAMILIES.register(family.kind, family())
    return family
