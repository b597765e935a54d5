"""The linear layer: y = activation(x @ W.T + b).

Nearly all of a Transformer's arithmetic is here, so the multiply goes through one hook, `Linear.matmul`: by default
`plain_linear` below (F.linear, then the activation: transformers' computation, bit for bit). The engine swaps in
faster kernels and the row blocks that make a text's result independent of its batch (runtime/matmul.py,
`use_kernel`); a reader of the model needs nothing of that to follow the equations.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .activations import ACTIVATIONS

MatmulFn = Callable[..., torch.Tensor]  # (x, weight, bias, activation=None) -> activation(x @ weight.T + bias)


def activate(y: torch.Tensor, activation: str | None) -> torch.Tensor:
    return y if activation is None else ACTIVATIONS[activation](y)


def plain_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, activation: str | None = None
) -> torch.Tensor:
    """F.linear, then the activation as its own op: transformers' computation, bit for bit."""
    return activate(F.linear(x, weight, bias), activation)


class Linear(nn.Linear):
    """nn.Linear whose multiply is the kernel in `matmul` (plain_linear unless the engine set another), with an
    optional activation that the kernel may fuse into it: activation(x @ weight.T + bias)."""

    matmul: MatmulFn = staticmethod(plain_linear)

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: str | None = None,
                 dtype: torch.dtype | None = None):
        super().__init__(in_features, out_features, bias=bias, dtype=dtype)
        self.activation = activation  # a name from model/activations.py, or None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.matmul(x, self.weight, self.bias, self.activation)
