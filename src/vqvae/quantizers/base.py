"""What every quantizer shares: the output type, the interface, and the gradient estimators.

Every quantizer is an ``nn.Module`` taking channel-first input ``(B, D, *S)`` (as convs produce)
and returning a :class:`QuantizerOutput`; ``lookup(indices)`` maps an index map back to the
quantized tensor, bit for bit what ``forward`` returned in eval mode. Index maps are ``(B, *S)``,
or ``(B, L, *S)`` for quantizers with ``index_levels = L > 0`` (residual VQ: one row per level).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

INDEX_DTYPES = (torch.int64, torch.int32, torch.int16, torch.uint8)
LOW_PRECISION = (torch.bfloat16, torch.float16)


@dataclass
class QuantizerOutput:
    """What every quantizer returns. ``commitment_loss`` already carries β."""

    quantized: Tensor  # (B, D, *S) z_q, carrying the chosen gradient estimator back to z_e
    indices: Tensor  # (B, *S) int64, or (B, L, *S) for residual quantizers
    codebook_loss: Tensor  # ||sg[z_e] - e||² (zero for EMA codebooks and FSQ: no gradient)
    commitment_loss: Tensor  # β·||z_e - sg[e]||² (zero for FSQ)
    code_counts: Tensor  # (K,) or (L, K): this batch's histogram (summed over ranks in training)

    @property
    def loss(self) -> Tensor:
        return self.codebook_loss + self.commitment_loss

    @property
    def perplexity(self) -> Tensor:
        """exp(entropy) of this batch's histogram (use a window for health). Computed when
        asked, not on every training step."""
        return perplexity_of(self.code_counts)


def perplexity_of(counts: Tensor) -> Tensor:
    """exp(entropy) of a code histogram: K when codes are used uniformly, 1 when one code is.

    counts (K,) -> scalar; (L, K) -> the mean over the L levels.
    """
    p = counts.float() / counts.sum(-1, keepdim=True).clamp_min(1)
    return torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum(-1)).mean()


class Quantizer(nn.Module):
    """The interface of the family: ``forward(z) -> QuantizerOutput`` and ``lookup(indices)``.

    Attributes every quantizer sets: ``codebook_size`` (K, the number of distinct indices per
    level), ``dim`` (D, the input channel count) and ``index_levels`` (0, or L for ``(B, L, *S)``
    index maps).
    """

    codebook_size: int
    dim: int
    index_levels: int = 0

    def __call__(self, z: Tensor) -> QuantizerOutput:
        """``forward(z)``, in float32 whatever the caller's autocast: under mixed precision
        (``train.precision = "bf16"``) the encoder's bfloat16 output is cast up and autocast is
        off inside, so the distances, the EMA statistics and the losses are the fp32 path's
        (bfloat16 distances make close codes tie and codebook usage collapse)."""
        if not torch.is_autocast_enabled(z.device.type):
            return super().__call__(z)
        with torch.autocast(z.device.type, enabled=False):
            return super().__call__(z.float() if z.dtype in LOW_PRECISION else z)

    def forward(self, z: Tensor) -> QuantizerOutput:
        raise NotImplementedError

    def lookup(self, indices: Tensor) -> Tensor:
        raise NotImplementedError

    def export_indices(self, z: Tensor) -> Tensor:
        """The eval-mode ``forward(z).indices`` as plain tensor operations that a graph
        exporter (ONNX) can follow: no C++ kernel, no statistics, no loss. (B, D, *S) ->
        (B, *S), or (B, L, *S) for ``index_levels = L``."""
        raise NotImplementedError(f"{type(self).__name__} cannot be exported")

    def export_lookup(self, indices: Tensor) -> Tensor:
        """``lookup(indices)`` without its range check (a check on the values cannot be part
        of an exported graph): (B, *S) -> (B, D, *S)."""
        raise NotImplementedError(f"{type(self).__name__} cannot be exported")

    def sync_from_buffers(self) -> None:
        """Re-read what this quantizer keeps in Python between steps from its buffers (the
        codebook quantizers' step counter and init flag). ``load_state_dict`` does it itself;
        call it after writing buffers in place otherwise (a checkpoint restore, undoing a
        skipped step). Nothing to do for quantizers without such state."""

    def _check_input(self, z: Tensor) -> None:
        if z.dim() < 2 or z.shape[1] != self.dim:
            raise ValueError(f"expected input (B, {self.dim}, ...), got {tuple(z.shape)}")

    def _check_indices(self, indices: Tensor) -> None:
        if indices.dtype not in INDEX_DTYPES:
            raise ValueError(f"indices must be integers, got {indices.dtype}")
        if indices.numel() and (indices.min() < 0 or indices.max() >= self.codebook_size):
            raise ValueError(
                f"indices must lie in [0, {self.codebook_size}), got range "
                f"[{int(indices.min())}, {int(indices.max())}]"
            )


# --- gradient estimators: z, q (..., D) -> a tensor whose value is exactly q ---------------------
# Both return ``q.detach() + (f(z) - f(z).detach())``: the difference is exactly 0 in IEEE
# arithmetic, so the forward value is the code bit for bit (decode_indices reproduces it), and
# the backward pass sees only the chosen ``f``.


def straight_through(z: Tensor, q: Tensor) -> Tensor:
    """z_q = z + sg[q - z] (van den Oord et al. 2017, eq. 1-3): the gradient at q reaches z
    unchanged."""
    return q.detach() + (z - z.detach())


def rotation_trick(z: Tensor, q: Tensor, eps: float = 1e-8) -> Tensor:
    """Rotation trick (Fifty et al. 2024, "Restructuring Vector Quantization with the Rotation
    Trick", sec. 4.2): q̃ = sg[λR]·z with λ = ||q|| / ||z|| and R the rotation taking ẑ to q̂
    in the plane they span, R = I - 2rrᵀ + 2q̂ẑᵀ with r = (ẑ + q̂) / ||ẑ + q̂||.

    The value is q; the gradient at z is λRᵀ·(gradient at q), so an encoder output's gradient
    is rotated and rescaled as its code sees it rather than copied. Works on the last dimension.
    """
    zd, qd = z.detach(), q.detach()
    z_norm = zd.norm(dim=-1, keepdim=True).clamp_min(eps)  # (..., 1)
    q_norm = qd.norm(dim=-1, keepdim=True)
    z_hat, q_hat = zd / z_norm, qd / q_norm.clamp_min(eps)
    r = F.normalize(z_hat + q_hat, dim=-1, eps=eps)
    # λ(z - 2r(rᵀz) + 2q̂(ẑᵀz)) with λ, r, q̂, ẑ constants: linear in z, so d/dz = λR.
    rotated = (q_norm / z_norm) * (
        z - 2 * (z * r).sum(-1, keepdim=True) * r + 2 * (z * z_hat).sum(-1, keepdim=True) * q_hat
    )
    return qd + (rotated - rotated.detach())


ESTIMATORS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "ste": straight_through,
    "rotation": rotation_trick,
}


def quantize(
    z: Tensor,
    codes: Tensor,
    beta: float,
    gradient: str,
    diff: Tensor | None = None,
    sq_sum: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """z (N, D), the codes chosen for it (N, D) -> (z_q, β·||z - sg[codes]||²): z_q has exactly
    the codes' value and carries the ``gradient`` estimator back to z.

    Straight-through, the training default, runs as one autograd node
    (:class:`_StraightThroughCommitment`): the same values and gradients as
    ``straight_through`` plus ``β·mse_loss`` with half the passes over the (N, D) tensors, or
    none when the caller has ``diff = z - codes`` and ``sq_sum = Σ diff²`` (a 0-dim tensor)
    already (``native.gather`` returns them with the codes).
    """
    if gradient == "ste":
        return _StraightThroughCommitment.apply(z, codes.detach(), beta, diff, sq_sum)
    return ESTIMATORS[gradient](z, codes), beta * F.mse_loss(z, codes.detach())


class _StraightThroughCommitment(torch.autograd.Function):
    """forward(z, codes, β[, z - codes, Σ(z - codes)²]) -> (codes, β·mean((z - codes)²));
    backward: the gradient at z_q reaches z unchanged, plus the commitment term's
    2β(z - codes)/numel."""

    @staticmethod
    def forward(ctx, z, codes, beta, diff=None, sq_sum=None):
        mean = beta / max(z.numel(), 1)  # β / numel
        if diff is None:
            diff = z - codes
            flat = diff.reshape(-1)
            commitment = torch.dot(flat, flat) * mean
        else:  # sq_sum may be float64 (the kernel's accumulator): scale, then round once
            commitment = (sq_sum * mean).to(z.dtype)
        ctx.scale = 2.0 * mean
        ctx.save_for_backward(diff)
        return codes, commitment

    @staticmethod
    def backward(ctx, grad_quantized: Tensor, grad_commitment: Tensor):
        (diff,) = ctx.saved_tensors
        # One pass: grad_z = grad_q + (2β / numel) · grad_c · (z - codes)
        grad_z = torch.addcmul(grad_quantized, diff, grad_commitment * ctx.scale)
        return grad_z, None, None, None, None
