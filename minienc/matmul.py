"""Matrix-multiply kernels for the encoder's linear layers, looked up by name.

Every kernel has F.linear's signature, fn(x, weight, bias) -> x @ weight.T + bias, with x (..., in), weight
(out, in), bias (out,) or None. The linear layers are nearly all of an encoder's arithmetic, so the kernel decides
most of its speed; it also decides the last bits of every result, since kernels sum the products in different orders.

- "torch":  F.linear, what transformers and sentence-transformers run. On x86 CPUs PyTorch sends float32 to MKL,
            which runs its AVX2 code on AMD processors even where they have AVX-512.
- "onednn": oneDNN's inner product, which ships inside PyTorch, with AVX-512 code where the CPU has it. Measured on the 2-core AMD EPYC (Zen 5) this project runs on, on the encoder's matrix shapes:
            about 530 GFLOP/s against MKL's 220. Results are float32 sums like any other, within a few ulps of
            "torch", and a row's result does not depend on the other rows once there are 2 or more (MKL's needs 12;
            see minienc/packed.py). Only float32 on the CPU, for inference: other dtypes, other devices and calls
            that autograd must differentiate go to F.linear (oneDNN's op has no backward).

`Encoder.from_pretrained(..., matmul=name)` or `Encoder.set_matmul(name)` selects one; the default "torch" keeps
transformers' bits. SentenceEncoder's packed execution on the CPU takes fastest_on_cpu().
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

MatmulFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


def onednn_available() -> bool:
    """Whether this PyTorch build has oneDNN and its fused linear op (x86 and Arm builds from PyPI do)."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def fastest_on_cpu() -> str:
    """The kernel to prefer on this CPU when the last bits are free: "onednn" on x86 CPUs with AVX2 or AVX-512,
    where it was measured as fast as MKL or faster (feed-forward shape, 2 cores: AVX-512 530 vs 230 GFLOP/s; oneDNN
    held to AVX2 262 vs 230); "torch" elsewhere (on SSE4.1 alone oneDNN was 2x slower; Arm was not measured)."""
    fast = torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")
    return "onednn" if fast and onednn_available() else "torch"


def onednn(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x @ weight.T + bias by oneDNN, for float32 CPU inference; F.linear for everything else."""
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
    if x.device.type != "cpu" or x.dtype != torch.float32 or needs_grad:
        return F.linear(x, weight, bias)
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")  # no fused post-op


MATMUL: dict[str, MatmulFn] = {"torch": F.linear, "onednn": onednn}


def get_matmul(name: str) -> MatmulFn:
    if name not in MATMUL:
        raise ValueError(f"unknown matmul {name!r}; choose one of {sorted(MATMUL)}")
    if name == "onednn" and not onednn_available():
        raise ValueError(f"matmul 'onednn' needs a PyTorch built with oneDNN; this one ({torch.__version__}) is not: "
                         f"use matmul='torch'")
    return MATMUL[name]
