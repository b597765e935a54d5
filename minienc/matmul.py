"""Matrix-multiply kernels for the encoder's linear layers, looked up by name.

Every kernel has one signature:

    fn(x, weight, bias, activation=None) -> activation(x @ weight.T + bias)

- x (..., in); weight (out, in); bias (out,) or None
- activation: a `hidden_act` name from minienc/activations.py, or None. The feed-forward up-projection passes its
  activation here, so that a kernel can apply it while the result is still in cache instead of in a second pass.

The linear layers are nearly all of an encoder's arithmetic, so the kernel decides most of its speed; it also
decides the last bits of every result, since kernels sum the products in different orders.

- "torch":  F.linear, then the activation: what transformers and sentence-transformers run. On x86 CPUs PyTorch
            sends float32 to MKL, which on this project's AMD processor runs at the AVX2 rate although the CPU
            has AVX-512.
- "onednn": oneDNN's inner product, which ships inside PyTorch, with AVX-512 code where the CPU has it, and GELU
            (erf form) fused into it. Measured on the 2-core AMD EPYC (Zen 5) this project runs on, on the encoder's
            matrix shapes: about 530 GFLOP/s against MKL's 230. Its sums are float32 sums in another order, and a
            row's result does not depend on the other rows once there are 2 or more (MKL's needs 12; see
            minienc/packed.py). Only float32 on the CPU, for inference: other dtypes, other devices and calls that
            autograd must differentiate go to the "torch" kernel (oneDNN's op has no backward).

`Encoder.from_pretrained(..., matmul=name)` or `Encoder.set_matmul(name)` selects one; the default "torch" keeps
transformers' bits. SentenceEncoder's packed execution on the CPU takes fastest_on_cpu().
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .activations import ACTIVATIONS

MatmulFn = Callable[..., torch.Tensor]  # (x, weight, bias, activation=None) -> tensor
# hidden_act -> oneDNN post-op (attr, algorithm) that computes it inside the multiply; "none" selects the erf form
ONEDNN_POST_OPS = {"gelu": ("gelu", "none")}


def activate(y: torch.Tensor, activation: str | None) -> torch.Tensor:
    return y if activation is None else ACTIVATIONS[activation](y)


def torch_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, activation: str | None = None
) -> torch.Tensor:
    """F.linear, then the activation as its own op: transformers' computation, bit for bit."""
    return activate(F.linear(x, weight, bias), activation)


def onednn(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, activation: str | None = None
) -> torch.Tensor:
    """The same by oneDNN, for float32 CPU inference; torch_linear for everything else."""
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
    if x.device.type != "cpu" or x.dtype != torch.float32 or needs_grad:
        return torch_linear(x, weight, bias, activation)
    if activation in ONEDNN_POST_OPS:
        attr, algorithm = ONEDNN_POST_OPS[activation]
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, attr, [], algorithm)
    return activate(torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], ""), activation)


MATMUL: dict[str, MatmulFn] = {"torch": torch_linear, "onednn": onednn}


def onednn_available() -> bool:
    """Whether this PyTorch build has oneDNN and its fused linear op (x86 and Arm builds from PyPI do)."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def fastest_on_cpu() -> str:
    """The kernel to prefer on this CPU when the last bits are free: "onednn" on x86 CPUs with AVX2 or AVX-512,
    where it was measured as fast as MKL or faster (feed-forward shape, 2 cores: AVX-512 530 vs 230 GFLOP/s; oneDNN
    held to AVX2 262 vs 230); "torch" elsewhere (on SSE4.1 alone oneDNN was 2x slower; Arm was not measured)."""
    fast = torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")
    return "onednn" if fast and onednn_available() else "torch"


def get_matmul(name: str) -> MatmulFn:
    if name not in MATMUL:
        raise ValueError(f"unknown matmul {name!r}; choose one of {sorted(MATMUL)}")
    if name == "onednn" and not onednn_available():
        raise ValueError(f"matmul 'onednn' needs a PyTorch built with oneDNN; this one ({torch.__version__}) is not: "
                         f"use matmul='torch'")
    return MATMUL[name]
