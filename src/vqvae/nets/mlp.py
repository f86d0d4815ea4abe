"""MLP encoder/decoder for plain vectors: (B, F) <-> M code vectors (B, D, M)."""

from __future__ import annotations

from torch import Tensor, nn


def mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers between consecutive ``sizes`` with ReLU between them (none at the end)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    """(B, F) -> (B, D, M): ``M`` code vectors of dimension D, channel-first for a quantizer."""

    def __init__(self, in_features: int, hidden: int, layers: int, codes: int, dim: int) -> None:
        super().__init__()
        self.codes, self.dim = codes, dim
        self.net = mlp([in_features] + [hidden] * layers + [codes * dim])

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).view(x.shape[0], self.codes, self.dim).transpose(1, 2)  # (B, D, M)


class MLPDecoder(nn.Module):
    """(B, D, M) -> (B, F)."""

    def __init__(self, out_features: int, hidden: int, layers: int, codes: int, dim: int) -> None:
        super().__init__()
        self.net = mlp([codes * dim] + [hidden] * layers + [out_features])

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z.transpose(1, 2).reshape(z.shape[0], -1))  # (B, M·D) -> (B, F)
