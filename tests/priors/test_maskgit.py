"""The MaskGIT prior: the cosine decoding schedule (exactly the scheduled number of positions
revealed per step, kept positions never change), completion and inpainting keep the given
codes exactly, bidirectional attention behind the mask token, the masked training loss, the
shared sampling options, save -> load, and a short training run that must learn."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from vqvae.errors import ConfigError
from vqvae.priors import (
    PRIORS,
    MaskGITPrior,
    MaskGITPriorConfig,
    TransformerPrior,
    TransformerPriorConfig,
    load_prior,
)
from vqvae.priors.maskgit import masked_schedule
from vqvae.priors.sampling import sample_and_score
from vqvae.priors.transformer import position_embeddings

K = 6

pytestmark = pytest.mark.usefixtures("one_thread")


def make(num_classes: int = 3, label_dropout: float = 0.1, layout: str = "2d", **kw):
    torch.manual_seed(0)
    cfg = MaskGITPriorConfig(
        codebook_size=K,
        dim=16,
        heads=2,
        layers=2,
        num_classes=num_classes,
        label_dropout=label_dropout,
        layout=layout,
        **kw,
    )
    return MaskGITPrior(cfg).double().eval()


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class Recorder:
    """Records the token maps the network is shown at every decoding step."""

    def __init__(self, model: MaskGITPrior) -> None:
        self.seen: list[torch.Tensor] = []
        inner = model._logits

        def logits(tokens, *args):
            self.seen.append(tokens.clone())
            return inner(tokens, *args)

        model._logits = logits


# ----------------------------------------------------------------- the schedule


def test_masked_schedule_follows_the_cosine_and_reveals_at_least_one_a_step() -> None:
    unknown = torch.tensor([49, 256, 20, 3, 1, 0])
    steps = 8
    after = masked_schedule(unknown, steps)  # (T, B)
    for b, u in enumerate(unknown.tolist()):
        col = after[:, b].tolist()
        before = [u] + col[:-1]
        assert col[-1] == 0
        for t, (prev, now) in enumerate(zip(before, col, strict=True)):
            cosine = math.floor(u * math.cos(math.pi / 2 * (t + 1) / steps))
            if prev == 0:
                assert now == 0
            else:  # ⌊U·γ⌋, at least one fewer than before, none after the last step
                expected = 0 if t == steps - 1 else min(cosine, prev - 1)
                assert now == expected, (u, t)
    # the paper's shape: few revealed at first, most at the end
    assert after[:, 1].tolist() == [251, 236, 212, 181, 142, 97, 49, 0]
    assert after[:, 3].tolist() == [2, 1, 0, 0, 0, 0, 0, 0]  # U < T: done in U steps


@pytest.mark.parametrize("guided", [False, True])
def test_decoding_reveals_exactly_the_schedule_and_never_changes_a_kept_code(guided) -> None:
    model = make()
    rec = Recorder(model)
    n, grid, steps = 3, (4, 5), 6
    out = model.sample(
        n,
        grid,
        torch.tensor([0, 1, 2]),
        steps=steps,
        guidance_scale=2.0 if guided else None,
        generator=gen(1),
    )
    # The first step shows blank maps, once for each class (their logits are kept per class):
    # classes 0, 1, 2 and, guided, the null class.
    classes = 4 if guided else 3
    blank, later = rec.seen[:classes], rec.seen[classes:]
    assert all(b.shape == (1, 20) and (b == K).all() for b in blank)
    seen = [torch.full((n, 20), K)] + [s[:n] for s in later]  # the conditional rows
    if guided:  # then the same maps with the null class
        assert all(torch.equal(s[:n], s[n:]) for s in later)
    assert len(seen) == steps
    final = out.reshape(n, -1)
    visible = [s != K for s in seen] + [torch.ones_like(final, dtype=torch.bool)]
    schedule = masked_schedule(torch.full((n,), 20), steps)
    for t in range(steps):
        revealed = visible[t + 1] & ~visible[t]
        assert not (visible[t] & ~visible[t + 1]).any()  # nothing is re-masked
        masked_before = (~visible[t]).sum(1)
        expected = masked_before - schedule[t]
        assert torch.equal(revealed.sum(1), expected), t
        # a code shown at step t is the code in the final map
        assert torch.equal(seen[t][visible[t]], final[visible[t]])
    assert not visible[0].any()  # nothing given: everything masked at the first step


def test_completion_keeps_the_given_part_exactly() -> None:
    model = make()
    rec = Recorder(model)
    given = torch.randint(0, K, (4, 2, 5), generator=gen(2))  # the first two rows of 4 × 5
    out = model.sample(4, (4, 5), 1, prefix=given, guidance_scale=1.5, generator=gen(3))
    assert torch.equal(out[:, :2], given)
    assert torch.equal(rec.seen[0][:4, :10], given.reshape(4, 10))  # shown from the start
    assert (rec.seen[0][:, 10:] == K).all()  # the rest is masked at the first step
    # the schedule counts the 10 unknown positions only: 8 default steps of it
    assert len(rec.seen) == min(10, model.config.decode_steps)


def test_inpainting_keeps_every_kept_position_and_redraws_the_rest() -> None:
    model = make(num_classes=0, label_dropout=0.0)
    codes = torch.randint(0, K, (5, 4, 5), generator=gen(4))
    keep = torch.rand(5, 4, 5, generator=gen(5)) < 0.5  # a different pattern per map
    keep[0] = True  # nothing to draw in map 0
    keep[1] = False  # everything in map 1
    out = model.inpaint(codes, keep, generator=gen(6), top_k=3)
    assert torch.equal(out[keep], codes[keep])
    assert out.shape == codes.shape and int(out.min()) >= 0 and int(out.max()) < K


def test_same_seed_same_maps_and_greedy_decoding_is_deterministic() -> None:
    model = make()
    a = model.sample(3, (3, 4), 2, generator=gen(7))
    assert torch.equal(a, model.sample(3, (3, 4), 2, generator=gen(7)))
    assert not torch.equal(a, model.sample(3, (3, 4), 2, generator=gen(8)))
    noiseless = make(confidence_noise=0.0)  # argmax codes, revealed by confidence: no chance
    g1 = noiseless.sample(2, (3, 4), 2, temperature=0, generator=gen(1))
    assert torch.equal(g1, noiseless.sample(2, (3, 4), 2, temperature=0, generator=gen(2)))


def test_sequences_1d_layout() -> None:
    model = make(layout="1d", max_length=20)
    out = model.sample(2, (14,), 0, generator=gen(9), steps=4)
    assert out.shape == (2, 14)
    prefix = torch.randint(0, K, (2, 5), generator=gen(10))
    assert torch.equal(model.sample(2, (14,), 0, prefix=prefix, generator=gen(11))[:, :5], prefix)


# ----------------------------------------------------------------- the network


def test_attention_is_bidirectional_and_the_mask_token_hides_a_code() -> None:
    model = make(num_classes=0, label_dropout=0.0)
    codes = torch.randint(0, K, (1, 3, 4), generator=gen(12))
    mask = torch.zeros(1, 3, 4, dtype=torch.bool)
    mask[0, 1, 1] = True  # predict (1, 1)
    with torch.no_grad():
        ref = model(codes, mask=mask)[0, :, 1, 1]
        for r, c in [(0, 0), (2, 3)]:  # before and after the masked position
            other = codes.clone()
            other[0, r, c] = (other[0, r, c] + 1) % K
            assert (model(other, mask=mask)[0, :, 1, 1] - ref).abs().max() > 1e-9
        hidden = codes.clone()
        hidden[0, 1, 1] = (hidden[0, 1, 1] + 1) % K  # the code behind the mask
        assert torch.equal(model(hidden, mask=mask), model(codes, mask=mask))


def test_training_loss_is_the_cross_entropy_of_the_masked_codes_only() -> None:
    model = make(num_classes=0, label_dropout=0.0)
    codes = torch.randint(0, K, (4, 3, 4), generator=gen(13))
    torch.manual_seed(5)
    loss = model.training_losses((codes, None))["loss"]
    torch.manual_seed(5)  # the same draws: the ratios, then the positions
    ratio = torch.cos(math.pi / 2 * torch.rand(4))
    mask = model.random_mask((4, 3, 4), ratio)
    counts = mask.reshape(4, -1).sum(1)
    assert torch.equal(counts, torch.ceil(ratio.double() * 12).long().clamp(1, 12))
    logits = model(codes, mask=mask)
    picked = F.log_softmax(logits, dim=1).gather(1, codes[:, None]).squeeze(1)  # (B, H, W)
    assert torch.allclose(loss, -picked[mask].mean())


def test_a_short_training_run_learns_class_maps() -> None:
    # Every map of class c is filled with code c: after training, guided samples of class c
    # are (mostly) c everywhere, and masked codes cost far less than log2 K bits.
    torch.manual_seed(0)
    cfg = MaskGITPriorConfig(
        codebook_size=K, dim=32, heads=2, layers=2, num_classes=3, label_dropout=0.2
    )
    model = MaskGITPrior(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    labels = torch.arange(64) % 3
    codes = labels[:, None, None].expand(64, 3, 3).clone()
    model.train()
    for _ in range(80):
        loss = model.training_losses((codes, labels))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    bits, count = model.masked_bits(codes, labels, 0.5, gen(0))
    assert bits / count < 0.5 < math.log2(K)
    out = model.sample(6, (3, 3), torch.tensor([0, 1, 2] * 2), guidance_scale=2.0, generator=gen(1))
    expected = torch.tensor([0, 1, 2] * 2)[:, None, None].expand_as(out)
    assert (out == expected).float().mean() > 0.9


def test_save_load_gives_the_same_samples(tmp_path) -> None:
    model = make().float()
    model.save_pretrained(tmp_path / "m")
    loaded = load_prior(tmp_path / "m")
    assert isinstance(loaded, MaskGITPrior) and loaded.config == model.config
    assert torch.equal(
        model.sample(2, (3, 4), 1, generator=gen(2)), loaded.sample(2, (3, 4), 1, generator=gen(2))
    )


def test_registered_and_without_exact_likelihood() -> None:
    assert PRIORS.get("maskgit") is MaskGITPrior
    assert MaskGITPrior.exact_likelihood is False
    assert all(cls.exact_likelihood for kind, cls in PRIORS.items() if kind != "maskgit")


def test_fitted_config_sizes_and_layout() -> None:
    cfg = MaskGITPrior.fitted_config(
        MaskGITPriorConfig(), grid=(64,), codebook_size=16, num_classes=10, train_items=100
    )
    assert cfg.layout == "1d" and cfg.max_length == 64 and cfg.num_classes == 10
    assert cfg.dim is not None and cfg.layers is not None
    with pytest.raises(ConfigError, match="conditioned on a code map"):
        MaskGITPrior.fitted_config(
            MaskGITPriorConfig(), grid=(4, 4), codebook_size=8, num_classes=0, cond_codebook_size=8
        )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"decode_steps": 0}, "prior.decode_steps"),
        ({"confidence_noise": -1.0}, "prior.confidence_noise"),
        ({"dim": 10, "heads": 3}, "divisible"),
    ],
)
def test_config_errors_name_the_field(kwargs, match) -> None:
    with pytest.raises(ConfigError, match=match):
        MaskGITPriorConfig(**kwargs)


def test_sampling_errors() -> None:
    model = make()
    with pytest.raises(ConfigError, match="steps"):
        model.sample(1, (3, 3), 0, steps=0)
    with pytest.raises(ValueError, match="temperature"):
        model.sample(1, (3, 3), 0, temperature=-1)
    with pytest.raises(ConfigError, match="guidance needs labels"):
        model.sample(1, (3, 3), guidance_scale=2.0)
    with pytest.raises(ConfigError, match="max_rows"):
        model.sample(1, (40, 3), 0)
    with pytest.raises(ValueError, match="keep"):
        model.inpaint(torch.zeros(1, 3, 3, dtype=torch.long), torch.ones(1, 3, 3), 0)
    with pytest.raises(ValueError, match="ratio"):
        model.masked_bits(torch.zeros(1, 3, 3, dtype=torch.long), torch.tensor([0]), 0.0)


def test_confidence_noise_given_at_sampling_is_the_configured_one() -> None:
    model = make()
    given = model.sample(6, (3, 3), 1, generator=gen(4), confidence_noise=20.0)
    inpainted = model.inpaint(
        given, torch.rand(6, 3, 3, generator=gen(5)) < 0.5, 1, generator=gen(6),
        confidence_noise=20.0,
    )  # fmt: skip
    default = model.sample(6, (3, 3), 1, generator=gen(4))
    model.config = dataclasses.replace(model.config, confidence_noise=20.0)
    assert torch.equal(model.sample(6, (3, 3), 1, generator=gen(4)), given)
    assert not torch.equal(default, given)  # the noise orders the kept positions
    kept = torch.rand(6, 3, 3, generator=gen(5)) < 0.5
    assert torch.equal(model.inpaint(given, kept, 1, generator=gen(6)), inpainted)
    with pytest.raises(ConfigError, match="confidence_noise"):
        model.sample(1, (3, 3), 0, confidence_noise=-1.0)


def test_a_number_of_steps_is_refused_by_an_autoregressive_prior() -> None:
    model = TransformerPrior(TransformerPriorConfig(codebook_size=K, dim=8, heads=1, layers=1))
    with pytest.raises(ConfigError, match="one position per step"):
        model.sample(1, (2, 2), steps=3)
    assert model.parallel_steps is False and MaskGITPrior.parallel_steps is True


def test_inverse_cdf_draws_follow_the_softmax_and_skip_filtered_codes() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, 3.0]]).expand(40_000, 5)
    drawn = sample_and_score(logits, generator=gen(0))[0]
    freq = torch.bincount(drawn, minlength=5).double() / len(drawn)
    assert torch.allclose(freq, logits[0].double().softmax(0), atol=0.01)
    # the last code is the one kept by top-k = 1: the codes before it (all filtered) never come
    last = torch.tensor([[0.0, 0.0, 0.0, 0.0, 1e-3]]).expand(1000, 5)
    kept = sample_and_score(last, top_k=1, generator=gen(1))[0]
    assert (kept == 4).all()
    first = sample_and_score(-last, top_k=4, generator=gen(2))[0]
    assert (first != 4).all()  # the filtered last code is never drawn, even at r -> 1


def test_scores_are_the_log_probabilities_of_the_drawn_codes_after_filters() -> None:
    logits = torch.randn(64, 9, generator=gen(3))
    for options in ({}, {"temperature": 0.7, "top_k": 4}, {"temperature": 0}):
        drawn, score = sample_and_score(logits, generator=gen(4), **options)
        kept = logits / (options.get("temperature") or 1.0)  # temperature 0: unscaled scores
        if "top_k" in options:  # an independent top-k: everything below the 4th largest
            kept = kept.masked_fill(kept < kept.topk(4, dim=1).values[:, -1:], -math.inf)
        want = kept.log_softmax(1).gather(1, drawn[:, None]).squeeze(1)
        assert torch.allclose(score, want, atol=1e-5)
    greedy, _ = sample_and_score(logits, temperature=0)
    assert torch.equal(greedy, logits.argmax(1))
    _, nucleus = sample_and_score(logits, top_p=0.3, generator=gen(5))
    assert torch.isfinite(nucleus).all()  # a drawn code is never a filtered one


def test_blank_map_logits_are_kept_per_class_until_the_weights_change() -> None:
    model = make().eval()
    grid = (3, 4)
    pos = position_embeddings(model, grid)
    blank = torch.full((1, 12), K)

    def fresh(label: int) -> torch.Tensor:
        return model._logits(blank, torch.tensor([label]), pos)[0]

    kept = model._blank_logits(torch.tensor([2, 0, 2]), 3, grid, pos)  # (3·12, K)
    assert torch.equal(kept, torch.cat([fresh(2), fresh(0), fresh(2)]))
    rec = Recorder(model)
    model._blank_logits(torch.tensor([0]), 1, grid, pos)
    assert rec.seen == []  # kept: no network pass
    # a training step changes the weights in place: the kept logits are dropped
    optim = torch.optim.SGD(model.parameters(), lr=1.0)
    model.train()
    model.training_losses((torch.randint(0, K, (4, *grid)), torch.tensor([0, 1, 2, 0])))[
        "loss"
    ].backward()
    optim.step()
    model.eval()
    rec.seen.clear()
    again = model._blank_logits(torch.tensor([0]), 1, grid, pos)
    assert len(rec.seen) == 1 and torch.equal(again, fresh(0))
    assert not torch.equal(again, kept[12:24])
