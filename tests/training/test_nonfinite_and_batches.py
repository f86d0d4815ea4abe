"""Non-finite losses (stop naming the step with the last good checkpoint kept, or skip the batch
without a trace), rank-sharded batches, checkpoint pruning and the single-process no-ops of the
distributed helpers."""

import json

import numpy as np
import pytest
import torch
from helpers import tiny_image_model, tiny_vqvae

from vqvae import distributed
from vqvae.cli.main import main
from vqvae.models import VQVAE
from vqvae.training import (
    ShuffledBatches,
    TrainConfig,
    TrainingDiverged,
    fit,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from vqvae.training.loop import MAX_CONSECUTIVE_SKIPS

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_model() -> VQVAE:
    torch.manual_seed(0)
    return tiny_vqvae(codebook_size=8, dim=4)


def batches() -> ShuffledBatches:
    x = torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    return ShuffledBatches((x, None), 8, seed=0)


def poison(model: VQVAE, bad_calls: set[int] | None = None) -> None:
    """Make the loss NaN on the given calls of ``training_losses`` (1-based; None: always)."""
    losses, calls = model.training_losses, {"n": 0}

    def poisoned(batch):
        out = losses(batch)
        calls["n"] += 1
        if bad_calls is None or calls["n"] in bad_calls:
            out["loss"] = out["loss"] * float("nan")
        return out

    model.training_losses = poisoned


def config(**kw) -> TrainConfig:
    return TrainConfig(**{"steps": 6, "batch_size": 8, "checkpoint_every": 1, "log_every": 1, **kw})


def test_nonfinite_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    model = tiny_model()
    poison(model, {4})
    with pytest.raises(
        TrainingDiverged, match=r"loss became nan at step 4; .*checkpoint \(step 3\)"
    ):
        fit(model, batches(), config(), run_dir=tmp_path, show_progress=False)
    latest = latest_checkpoint(tmp_path / "checkpoints")
    assert latest is not None and latest.name == "step-00000003"
    assert not (tmp_path / "checkpoints" / "step-00000004").exists()
    fresh = tiny_model()
    state, _ = load_checkpoint(latest, fresh, torch.optim.AdamW(fresh.parameters()))
    assert state["step"] == 3
    assert all(torch.isfinite(v.float()).all() for v in fresh.state_dict().values())


def test_cli_reports_divergence_in_one_line_with_exit_code_2(tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "tiny.npz", images=(rng.random((40, 8, 8)) * 255).astype(np.uint8))
    run = tmp_path / "run"
    argv = ["train", "--data", f"npz:{tmp_path / 'tiny.npz'}", "--out", str(run), "--steps", "20"]
    tiny = [*tiny_image_model(codebook_size=8), "train.batch_size=8"]
    # An absurd learning rate without clipping: the weights blow up after the first step.
    tiny += ["train.lr=1e30", "train.grad_clip=0", "train.warmup_steps=0"]
    tiny += ["train.checkpoint_every=1"]
    assert main(argv + tiny) == 2
    err = capsys.readouterr().err
    last = err.replace("\r", "\n").strip().splitlines()[-1]  # after the (cleared) progress bar
    assert "Traceback" not in err
    assert last.startswith("vqvae train: error:") and " at step " in last
    step = int(last.split(" at step ")[1].split(";")[0])
    assert latest_checkpoint(run / "checkpoints").name == f"step-{step - 1:08d}"


def test_skip_nonfinite_skips_the_batch_without_a_trace(tmp_path):
    model = tiny_model()
    poison(model, {3})
    states = {}

    def on_step(step, m):  # every parameter and buffer, non-persistent ones included
        states[step] = {k: v.clone() for k, v in [*m.named_parameters(), *m.named_buffers()]}

    result = fit(
        model,
        batches(),
        config(skip_nonfinite=True),
        run_dir=tmp_path,
        show_progress=False,
        on_step=on_step,
    )
    assert result.skipped == 1 and result.step == 6
    # Step 3 changed nothing: weights and codebook buffers (EMA, usage, the pool of recent
    # encoder outputs) are those of step 2.
    for name, value in states[2].items():
        assert torch.equal(states[3][name], value), name
    assert not torch.equal(states[4]["quantizer.codebook"], states[3]["quantizer.codebook"])
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert rows[-1]["train/skipped"] == 1


def test_a_skipped_first_batch_undoes_the_codebook_initialisation():
    # The quantizer keeps its step counter and init flag in Python between steps: undoing a
    # batch reaches them too, so the next batch initialises the codebook again, as step 0.
    model = tiny_model()
    poison(model, {1})
    inits, init = [], model.quantizer._init_codebook
    model.quantizer._init_codebook = lambda flat, n: inits.append(n) or init(flat, n)
    run = config(skip_nonfinite=True, steps=3, checkpoint_every=0)
    assert fit(model, batches(), run, show_progress=False).skipped == 1
    assert len(inits) == 2 and int(model.quantizer.steps) == 2


def test_skip_nonfinite_still_stops_after_too_many_in_a_row(tmp_path):
    model = tiny_model()
    poison(model)
    with pytest.raises(TrainingDiverged, match="in a row"):
        fit(
            model,
            batches(),
            config(skip_nonfinite=True, steps=50),
            run_dir=tmp_path,
            show_progress=False,
        )
    assert latest_checkpoint(tmp_path / "checkpoints").name == f"step-{MAX_CONSECUTIVE_SKIPS:08d}"


# --- batches -------------------------------------------------------------------------------------
def test_ranks_take_disjoint_slices_of_one_global_batch():
    x = torch.arange(50)
    one = ShuffledBatches((x,), 10, seed=3, rank=0, world_size=1)
    two = [ShuffledBatches((x,), 5, seed=3, rank=r, world_size=2) for r in range(2)]
    assert one.steps_per_epoch == two[0].steps_per_epoch == 5
    for _ in range(12):  # more than two epochs
        (big,) = next(one)
        (a,), (b,) = next(two[0]), next(two[1])
        assert torch.equal(torch.cat([a, b]), big)


def test_sharded_batches_resume_from_their_state():
    x = torch.arange(40)
    a = ShuffledBatches((x,), 4, seed=1, rank=1, world_size=2)
    for _ in range(7):
        next(a)
    b = ShuffledBatches((x,), 4, seed=1, rank=1, world_size=2)
    b.load_state_dict(a.state_dict())
    for _ in range(9):
        assert torch.equal(next(a)[0], next(b)[0])


def test_more_ranks_than_items_is_refused():
    with pytest.raises(ValueError, match="cannot feed"):
        ShuffledBatches((torch.arange(3),), 4, rank=0, world_size=4)


# --- checkpoints and single-process helpers ------------------------------------------------------
def test_checkpoints_newer_than_the_one_saved_are_pruned(tmp_path):
    """After a kill, a resumed run re-saves earlier steps; leftovers of the abandoned future go."""
    model = tiny_model()
    optimizer = torch.optim.AdamW(model.parameters())
    state = {"step": 0, "elapsed": 0.0, "batches": {"epoch": 0, "position": 0, "seed": 0}}
    for step in (1, 2, 3, 7):
        save_checkpoint(tmp_path, model, optimizer, {**state, "step": step}, keep=2)
    (tmp_path / ".latest.abc.tmp").write_text("left by a kill")
    save_checkpoint(tmp_path, model, optimizer, {**state, "step": 4}, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "latest",
        "step-00000003",
        "step-00000004",
    ]


def test_distributed_helpers_are_no_ops_in_one_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with distributed.process_group_from_env() as many:
        assert many is False
        assert distributed.rank() == 0 and distributed.world_size() == 1
        assert distributed.any_rank(True, False) == (True, False)
        assert distributed.mean_over_ranks({"a": 2.0}) == {"a": 2.0}
        t = torch.arange(3)
        assert distributed.gather(t)[0].tolist() == [0, 1, 2]
        assert distributed.local_device() == torch.device("cpu")
    assert not torch.distributed.is_initialized()
    if not torch.cuda.is_available():
        assert distributed.choose_backend() == "gloo"
