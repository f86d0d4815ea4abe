"""The demo pipeline end to end on the built-in digits (tiny budgets; the full demo is the
README's first command)."""

import json

from vqvae.pipeline.demo import run_demo


def test_demo_runs_and_reruns(tmp_path):
    out = tmp_path / "demo"
    overrides = ["train.steps=20", "prior_train.steps=10"]
    metrics = run_demo(out, overrides, show_progress=False)
    for name in ["reconstructions.png", "samples.png", "codebook_usage.png", "metrics.json"]:
        assert (out / name).is_file(), name
    assert json.loads((out / "metrics.json").read_text())["prior_nll_bits_per_code"] > 0
    assert metrics["codebook_size"] == 32
    (out / "stale.txt").write_text("left by the first run")
    again = run_demo(out, overrides, show_progress=False)  # a second run replaces the first
    assert not (out / "stale.txt").exists()
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 20  # one run's log, not two appended
    assert again == metrics  # same config, same seeds: the same run again
