"""The codebook ablation's CIFAR-10 grid (issue #14) on tiny settings: its rows carry the issue's
keys in order, unsupported (variant, K) pairs are skipped, reruns merge, the plot and table are
written, and the must-show verdict reads the rows right. The Fashion-MNIST rows keep their keys."""

import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import codebook_ablation as ca  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def test_cifar_grid_rows_plot_and_merge(tmp_path, capsys):
    out = tmp_path / "ablation.json"
    common = ["--data", "digits", "--grid", "cifar10", "--steps", "2", "--hidden", "16"]
    ks_variants = ["--ks", "1024", "--variants", "default", "fsq"]
    assert ca.main([*common, *ks_variants, "--out", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [list(r) for r in rows] == [list(ca.CIFAR_ROW_KEYS)] * 2
    assert [(r["variant"], r["K"], r["default"]) for r in rows] == [
        ("default", 1024, True),
        ("fsq", 1024, False),
    ]
    for r in rows:
        assert -1 <= r["ssim"] <= 1 and r["seconds"] >= 0 and 0 <= r["usage"] <= 1
    assert out.with_suffix(".png").read_bytes().startswith(b"\x89PNG")
    assert "| SSIM |" in out.with_suffix(".md").read_text()

    # A second run merges: lfq cannot have 1000 codes (skipped, said why), fsq can (8,5,5,5).
    assert ca.main([*common, "--ks", "1000", "--variants", "lfq", "fsq", "--out", str(out)]) == 0
    assert "skipped lfq K=1000" in capsys.readouterr().out
    rows = json.loads(out.read_text())
    assert [(r["variant"], r["K"]) for r in rows] == [
        ("fsq", 1000),
        ("default", 1024),
        ("fsq", 1024),
    ]


def test_grid_sizes_build_for_every_cifar_variant():
    for variant in ca.GRIDS["cifar10"].variants:
        for k in ca.GRIDS["cifar10"].ks:
            assert ca.unsupported(variant, k) is None, (variant, k)
    for variant in ("lfq", "bsq"):
        assert ca.unsupported(variant, 2**18) is None
    assert "power of two" in ca.unsupported("bsq", 1000)
    assert ca.unsupported("fsq", 3000) is not None


def test_data_picks_the_grid():
    assert ca.is_cifar10("folder:../shared/data/cifar10-jpeg")
    assert ca.is_cifar10("folder:../shared/data/cifar10-jpeg/")
    assert ca.is_cifar10("cifar:/data/cifar-10-python.tar.gz")
    assert not ca.is_cifar10("cifar:/data/cifar-100-python")
    assert not ca.is_cifar10("fashion-mnist:../shared/data/fashion-mnist")
    assert not ca.is_cifar10("digits")
    assert ca.GRIDS["fashion"].row_keys == ca.ROW_KEYS
    assert ca.GRIDS["fashion"].out == "codebook_ablation.json"


def row(variant, k, psnr, usage):
    return {"variant": variant, "K": k, "psnr": psnr, "usage": usage}


def test_large_codebook_verdict():
    rows = [
        row("default", 1024, 20.0, 1.0),
        row("default", 65536, 20.5, 0.95),  # alive, but +0.5 dB only
        row("lfq", 1024, 19.0, 1.0),
        row("lfq", 65536, 20.2, 0.92),  # alive and +1.2 dB: passes
        row("vq", 1024, 19.0, 0.1),
        row("vq", 65536, 21.0, 0.01),  # the best PSNR, but collapsed
        row("fsq", 4096, 22.0, 1.0),  # not at both sizes: no line of its own
    ]
    lines = ca.check_large_codebooks(rows)
    assert len(lines) == 5
    assert lines[0].startswith("default:") and "PASS" in lines[0] and "+0.50 dB" in lines[0]
    assert lines[0].endswith("FAIL")
    assert lines[1].startswith("lfq:") and "FAIL" not in lines[1]
    assert lines[2].startswith("vq:") and lines[2].count("FAIL") == 1
    assert "default (20.50 dB" in lines[3]  # the highest PSNR with usage >= 0.9
    assert lines[4] == "#14 must-show 1: PASS (variants meeting both: lfq)"
    assert ca.check_large_codebooks(rows[-1:]) == []
