"""The rotation trick (Fifty et al. 2024): the forward value is exactly the code, and the gradient
at the encoder output is λ·Rᵀ·g with λ = ||q|| / ||z|| and R the rotation taking ẑ to q̂,
computed here independently with explicit NumPy matrices."""

import numpy as np
import torch

from vqvae.quantizers import VectorQuantizer, rotation_trick, straight_through


def numpy_rotation(z, q):
    """R (D, D) = I - 2rrᵀ + 2q̂ẑᵀ (sec. 4.2), built as a matrix, and λ."""
    z, q = z.astype(np.float64), q.astype(np.float64)
    z_hat, q_hat = z / np.linalg.norm(z), q / np.linalg.norm(q)
    r = (z_hat + q_hat) / np.linalg.norm(z_hat + q_hat)
    R = np.eye(len(z)) - 2 * np.outer(r, r) + 2 * np.outer(q_hat, z_hat)
    return R, np.linalg.norm(q) / np.linalg.norm(z)


def test_reference_matrix_is_the_rotation_taking_z_to_q():
    # Guards the reference itself: R is orthogonal, det +1, and maps ẑ to q̂.
    rng = np.random.default_rng(0)
    z, q = rng.normal(size=5), rng.normal(size=5)
    R, lam = numpy_rotation(z, q)
    np.testing.assert_allclose(R.T @ R, np.eye(5), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-12)
    np.testing.assert_allclose(lam * R @ z, q, atol=1e-12)


def test_forward_is_exactly_the_code_and_gradient_is_rotated():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(7, 5, generator=g, requires_grad=True)
    q = torch.randn(7, 5, generator=g)
    out = rotation_trick(z, q)
    assert torch.equal(out, q)  # bit for bit
    upstream = torch.randn(7, 5, generator=g)
    (grad,) = torch.autograd.grad((out * upstream).sum(), z)
    for i in range(7):
        R, lam = numpy_rotation(z[i].detach().numpy(), q[i].numpy())
        expected = lam * R.T @ upstream[i].numpy().astype(np.float64)
        np.testing.assert_allclose(grad[i].numpy(), expected, rtol=1e-4, atol=1e-5)


def test_gradient_differs_from_straight_through_and_keeps_scaled_norm():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(32, 8, generator=g, requires_grad=True)
    q = torch.randn(32, 8, generator=g)
    upstream = torch.randn(32, 8, generator=g)
    (rot,) = torch.autograd.grad((rotation_trick(z, q) * upstream).sum(), z)
    (ste,) = torch.autograd.grad((straight_through(z, q) * upstream).sum(), z)
    assert torch.equal(ste, upstream)
    assert not torch.allclose(rot, ste)
    # A rotation keeps lengths: ||λRᵀg|| = λ||g||.
    lam = q.norm(dim=1) / z.detach().norm(dim=1)
    torch.testing.assert_close(rot.norm(dim=1), lam * upstream.norm(dim=1), rtol=1e-4, atol=1e-5)


def test_degenerate_inputs_stay_finite():
    z = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 2.0, 3.0]], requires_grad=True)
    q = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])  # zero z, z = -q, q = 0
    out = rotation_trick(z, q)
    assert torch.equal(out, q)
    (grad,) = torch.autograd.grad(out.sum(), z)
    assert torch.isfinite(grad).all()


def test_quantizer_uses_rotation_with_the_chosen_codes():
    torch.manual_seed(0)
    vq = VectorQuantizer(16, 4, kmeans_init=False, dead_code_threshold=0.0, gradient="rotation")
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    out = vq(z)
    codes = vq.codebook.detach()[out.indices].movedim(-1, 1)  # (2, 4, 3, 3)
    assert torch.equal(out.quantized, codes)
    upstream = torch.randn_like(z)
    (grad,) = torch.autograd.grad((out.quantized * upstream).sum(), z)
    flat_z = z.detach().movedim(1, -1).reshape(-1, 4).numpy()
    flat_q = codes.movedim(1, -1).reshape(-1, 4).numpy()
    flat_g = upstream.movedim(1, -1).reshape(-1, 4).numpy().astype(np.float64)
    flat_grad = grad.movedim(1, -1).reshape(-1, 4).numpy()
    for i in range(len(flat_z)):
        R, lam = numpy_rotation(flat_z[i], flat_q[i])
        np.testing.assert_allclose(flat_grad[i], lam * R.T @ flat_g[i], rtol=1e-4, atol=1e-6)
