"""The engine's attention: faster ways to compute the `sdpa` reference forms on a packed row. BERT's sdpa has a
packed form (model/attention.py, register_packed): on CUDA in float16 / bfloat16, PyTorch's variable-length flash
attention runs every text of the row in one call. On a CPU with AVX512-BF16 and no AMX, long bfloat16 texts attend by
bfloat16 matrix multiplies over blocks of queries (`bfloat16_math`), in every family form that calls PyTorch's kernel:
BERT's sdpa (in its packed form), the decoders' and the newer encoders' (their forms for one text alone,
register_text_form). Elsewhere, one call of the reference form per text.
"""

from __future__ import annotations

import functools
import inspect

import torch

from ..model.attention import (AttentionFn, Completion, Spans, causal_sdpa, per_text, register_packed,
                               register_text_form, sdpa, upcast_sdpa, with_triangle)

BFLOAT16_MATH_FROM = 128  # tokens: below it, PyTorch's flash kernel was the faster (docs/performance.md)


def long_texts_by_math(form: AttentionFn, complete: Completion | None = None) -> AttentionFn:
    """`form` on one text alone, its long bfloat16 texts (BFLOAT16_MATH_FROM tokens or more) by `bfloat16_math` where
    the CPU fits it (bfloat16_math_fits), with the text's mask as the contract has it (complete: how the family's mask
    becomes it; a decoder's None is its triangle); else `form` itself, PyTorch's kernel."""

    def alone(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
              scale: float) -> torch.Tensor:
        if bfloat16_math_fits(q) and q.shape[2] >= BFLOAT16_MATH_FROM:
            mask = mask if complete is None else complete(mask, q.shape[2], q.device)
            return bfloat16_math(q, k, v, mask, scale)
        return form(q, k, v, mask, scale)

    return alone


# the forms that call PyTorch's kernel; MPNet's relative-position attention is eager, its position bias inside the
# scores, and keeps its own
SDPA_ALONE = long_texts_by_math(sdpa)  # BERT's: every key
register_text_form(causal_sdpa)(long_texts_by_math(causal_sdpa, with_triangle))  # the decoders': None is the triangle
register_text_form(upcast_sdpa)(long_texts_by_math(upcast_sdpa))  # the newer encoders': all keys, or their band


@register_packed("sdpa")
def sdpa_packed(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, spans: Spans, scale: float) -> torch.Tensor:
    """sdpa on packed (1, nh, N, hs) input: on CUDA in float16 / bfloat16, one variable-length flash-attention call
    for the whole row; elsewhere one call per text (long bfloat16 ones by `bfloat16_math` where the CPU fits it).
    (Stacking texts of one length into one call of PyTorch's CPU flash kernel is not the same: a stacked text's bits
    can depend on the stack it is in; docs/performance.md, "Measured and not kept".)"""
    if varlen_fits(q):
        return varlen(q, k, v, spans, scale)
    return per_text(SDPA_ALONE)(q, k, v, spans, scale)


def bfloat16_math_fits(q: torch.Tensor) -> bool:
    """Whether long texts take `bfloat16_math`: bfloat16 on a CPU that multiplies it natively without AMX."""
    return q.device.type == "cpu" and q.dtype == torch.bfloat16 and bfloat16_without_amx()


@functools.cache
def bfloat16_without_amx() -> bool:
    """Whether oneDNN multiplies bfloat16 on this CPU (AVX512-BF16) and there is no AMX: the CPUs `bfloat16_math` was
    measured faster on, for long texts (docs/performance.md). With AMX that was not measured: the texts keep
    PyTorch's flash kernel there."""
    amx = hasattr(torch.cpu, "get_capabilities") and torch.cpu.get_capabilities().get("amx_bf16")
    onednn = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    return onednn and torch.ops.mkldnn._is_mkldnn_bf16_supported() and not amx


def bfloat16_math(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                  scale: float) -> torch.Tensor:
    """softmax(q k^T * scale) v for one unpadded text (1, nh, T, hs) as bfloat16 matrix multiplies, which use the
    CPU's bfloat16 dot products; mask: the text's own (None: every key), bool broadcastable to (1, 1, T, T).

    The queries go in blocks (`block_rows`), so that a block's scores stay in the cache, and each block multiplies
    only the keys from the first to the last its mask allows: a decoder's block skips the keys after it, a local
    layer's those beyond its band. Grouped keys are shared, not repeated: the query heads one key head serves are
    one matrix. Roundings: q * scale, the scores and the weights are each rounded to bfloat16 (softmax itself
    computes in float32); transformers' eager attention in bfloat16 rounds the scores before and after scaling
    instead of q, and the tests hold this to its accuracy."""
    _, nh, T, hs = q.shape
    kv_heads = k.shape[1]
    k, v = k.contiguous(), v.contiguous()  # once, not in every block's product (a text's slice of the row is strided)
    q = (q * scale).reshape(1, kv_heads, nh // kv_heads, T, hs)  # (1, nkv, g, T, hs): g query heads per key head
    allowed = None if mask is None else mask.expand(1, 1, T, T)[0, 0]  # (T, T)
    rows, out = block_rows(nh, T), []
    for a in range(0, T, rows):
        b = min(a + rows, T)
        block = None if allowed is None else allowed[a:b]  # (rows, T)
        first, last = key_range(block, T)
        queries = q[:, :, :, a:b].reshape(1, kv_heads, -1, hs)  # (1, nkv, g * rows, hs)
        scores = torch.matmul(queries, k[:, :, first:last].transpose(2, 3))  # (1, nkv, g * rows, keys)
        if block is not None and not bool(block[:, first:last].all()):
            scores.view(1, kv_heads, -1, b - a, last - first).masked_fill_(~block[:, first:last], float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        out.append(torch.matmul(weights, v[:, :, first:last]).view(1, kv_heads, -1, b - a, hs))
    return torch.cat(out, dim=3).view(1, nh, T, hs)


SCORES_BYTES = 2 << 20  # one block of queries' bfloat16 scores, all heads: chosen on an AMD Zen 4, 1-8 MiB alike there
# (docs/performance.md)


def block_rows(heads: int, T: int) -> int:
    """Queries per block: as many multiples of 64 as keep a block's scores (heads x rows x T, bfloat16) within
    SCORES_BYTES, at least 64; the whole text where that covers it."""
    return min(T, max(64, SCORES_BYTES // (2 * heads * T) // 64 * 64))


def key_range(block: torch.Tensor | None, T: int) -> tuple[int, int]:
    """(first, last + 1): the keys some query of the block may attend (block: bool (rows, T); None: every key)."""
    if block is None:
        return 0, T
    seen = block.any(dim=0).nonzero()
    return int(seen[0]), int(seen[-1]) + 1


def varlen_fits(q: torch.Tensor) -> bool:
    """Whether PyTorch's variable-length flash attention takes q: CUDA, compute capability 8.0 or later, float16 or
    bfloat16, a head size that is a multiple of 8 and at most 256."""
    return (VARLEN is not None and q.device.type == "cuda" and q.dtype in (torch.float16, torch.bfloat16)
            and q.shape[-1] % 8 == 0 and q.shape[-1] <= 256 and torch.cuda.get_device_capability(q.device) >= (8, 0))


def _varlen_attn():
    """PyTorch's variable-length flash attention (torch.nn.attention.varlen, CUDA), or None where it is missing."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn


VARLEN = _varlen_attn()
VARLEN_OPTIONS = set(inspect.signature(VARLEN).parameters) if VARLEN is not None else set()  # they vary by version


def varlen(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, spans: Spans, scale: float) -> torch.Tensor:
    """One flash-attention call over every text of the packed row, each text attending to itself (cu_seq marks
    where texts start). One split of the keys per text (num_splits=1, where this PyTorch has the option; the GPU
    tests check batch invariance either way), so that a text's result does not depend on what else the call holds."""
    cu_seq = torch.tensor([0, *(b for _, b in spans)], dtype=torch.int32, device=q.device)
    longest = max(b - a for a, b in spans)
    options = {"scale": scale, **({"num_splits": 1} if "num_splits" in VARLEN_OPTIONS else {})}
    y = VARLEN(by_token(q), by_token(k), by_token(v), cu_seq, cu_seq, longest, longest, **options)  # (N, nh, hs)
    return y.transpose(0, 1)[None]  # (1, nh, N, hs)


def by_token(t: torch.Tensor) -> torch.Tensor:
    """(1, nh, N, hs) -> (N, nh, hs), the layout varlen_attn reads (a view: no copy)."""
    return t[0].transpose(0, 1)
