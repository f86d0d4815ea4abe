"""keep_freed_memory: glibc malloc keeps a step's freed blocks, so the next step does not
page-fault fresh memory in again. A process-wide setting, so the library's fit() leaves it alone
unless asked; the vqvae command sets it for its own process."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from vqvae.training import keep_freed_memory

# Runs each action of argv in turn in one fresh process, then the page faults of a training
# step of a small convolutional network after it; prints them as a JSON list.
STEPS = textwrap.dedent(
    """
    import json, resource, sys, torch
    from torch import nn
    torch.set_num_threads(1)
    net = nn.Sequential(
        nn.Conv2d(1, 64, 4, 2, 1), nn.ReLU(), nn.Conv2d(64, 128, 4, 2, 1), nn.ReLU(),
        nn.ConvTranspose2d(128, 1, 4, 4),
    )
    x = torch.rand(64, 1, 28, 28)
    def step():
        net(x).square().mean().backward()
    def faults_per_step():
        for _ in range(3):
            step()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(10):
            step()
        return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10
    class Tiny(nn.Linear):
        def training_losses(self, batch):
            return {"loss": self(batch[0]).square().mean()}
    def fit(**options):
        from vqvae.training import ShuffledBatches, TrainConfig, fit
        config = TrainConfig(steps=2, batch_size=4, checkpoint_every=0, **options)
        fit(Tiny(3, 3), ShuffledBatches((torch.rand(8, 3), None), 4), config, show_progress=False)
    faults = []
    for action in sys.argv[1:]:
        if action == "keep":
            from vqvae.training import keep_freed_memory
            assert keep_freed_memory()
        elif action == "fit":
            fit()
        elif action == "fit-keep":
            fit(keep_freed_memory=True)
        elif action == "cli":
            from vqvae.cli.main import main
            assert main(["evaluate", "no-such-run"]) == 2  # fails after the process setup
        faults.append(faults_per_step())
    print(json.dumps(faults))
    """
)


def faults_per_step(*actions: str) -> list[float]:
    """Page faults of a training step after each of ``actions``, in one fresh process."""
    done = subprocess.run(
        [sys.executable, "-c", STEPS, *actions], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.splitlines()[-1])


def kept(faults: float, default: float) -> bool:
    # Measured here: ~2,300 page faults a step by default, 0 with the setting.
    return faults <= max(10.0, default / 10)


needs_glibc = pytest.mark.skipif(not keep_freed_memory(), reason="needs glibc malloc (Linux)")


@needs_glibc
def test_a_training_step_stops_faulting_in_fresh_pages_and_a_second_call_keeps_it():
    default, first, second = faults_per_step("none", "keep", "keep")
    assert default > 100, default  # the default allocator faults pages in every step
    assert kept(first, default) and kept(second, default), (default, first, second)


@needs_glibc
def test_fit_leaves_the_allocator_alone_and_the_command_sets_it():
    after_fit, after_cli = faults_per_step("fit", "cli")
    assert after_fit > 100, after_fit  # still glibc's defaults after training with fit()
    assert kept(after_cli, after_fit), (after_fit, after_cli)
    (after_fit_keep,) = faults_per_step("fit-keep")  # asked to: fit() sets it
    assert kept(after_fit_keep, after_fit), (after_fit, after_fit_keep)


class Tiny(torch.nn.Linear):
    def training_losses(self, batch):
        return {"loss": self(batch[0]).square().mean()}


def test_the_training_config_switches_it(monkeypatch):
    from vqvae.configs import from_dict, merge_overrides
    from vqvae.training import ShuffledBatches, TrainConfig, loop

    config = from_dict(TrainConfig, merge_overrides({}, ["keep_freed_memory=true", "steps=1"]))
    assert config.keep_freed_memory is True and TrainConfig().keep_freed_memory is False
    calls = []
    monkeypatch.setattr(loop, "keep_freed_memory", lambda: calls.append(1))
    for options in (config, TrainConfig(steps=1)):
        batches = ShuffledBatches((torch.rand(8, 3), None), 4)
        loop.fit(Tiny(3, 3), batches, options, show_progress=False)
    assert calls == [1]  # only the config that asks for it applied it
