"""The attention registry: every way of computing softmax(q k^T * scale) v, looked up by name.

Every implementation has one signature:

    fn(q, k, v, mask, scale) -> out

- q, k, v: (batch, heads, seq, head_dim)
- mask:    bool, broadcastable to (batch, 1, 1, seq); True where a key may be attended.
           None when nothing in the batch is padded. Every row has at least one True key: the encoder
           lets a sequence that is all padding attend to everything, so no variant ever sees an empty row.
- scale:   the factor applied to q k^T (1 / sqrt(head_dim); Gemma's: query_pre_attn_scalar ** -0.5)
- out:     (batch, heads, seq, head_dim)

Add your own with `@register_attention("name")` and select it with `Encoder.from_pretrained(..., attention="name")`.
A variant that reproduces one of transformers' implementations says so with `matches=`; `minienc parity` then holds
it to bit-exactness against that implementation by default, and the tests compare it with `eager`.

A decoder (Qwen3) attends causally: each token to itself and the tokens before it. Its forms live in a registry of
their own (`@register_causal`, end of this file), with the same signature and two differences: mask None means
"causal, nothing padded", else mask is bool (batch, 1, seq, seq) and already holds the causal triangle and the
padding; and k, v may have fewer heads than q (grouped-query attention).

The newer encoders (ModernBERT, Gemma 3) have a third registry (`@register_modern`, near the end): bidirectional,
with grouped key heads allowed, the softmax in float32, and a mask (batch, 1, seq, seq) where a layer attends within
a window; when that mask is None, and whether a padded row can be all False, follows transformers' rules, which the
family files state.

Packed input (runtime/batching.py) lays the texts of a batch end to end in one row, and each text must attend to itself
alone. By default that is one call of the variant per text (`per_text`); a variant may register a faster way with
`@register_packed("name")`: same inputs with (1, heads, N, head_dim) and the texts' spans instead of a mask, and
the same result for each text as it gets alone.
"""

import functools
import inspect
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, float], torch.Tensor]
Spans = Sequence[tuple[int, int]]  # text i is tokens spans[i][0]:spans[i][1] of the packed row
PackedAttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, Spans, float], torch.Tensor]
MaskRule = Callable[[int, torch.device], torch.Tensor | None]  # (T, device) -> the mask of one unpadded text

ATTENTION: dict[str, AttentionFn] = {}
# name -> the transformers attn_implementation it reproduces bit for bit; absent for variants that change the math
MATCHES: dict[str, str] = {}
PACKED: dict[str, PackedAttentionFn] = {}  # name -> its packed form, where faster than one call per text


def register_attention(name: str, *, matches: str | None = None) -> Callable[[AttentionFn], AttentionFn]:
    """Decorator: make `fn` selectable as `attention=name`. Re-registering a name replaces it.

    matches: the transformers attn_implementation ("eager", "sdpa") this function claims to reproduce exactly.
    """

    def add(fn: AttentionFn) -> AttentionFn:
        ATTENTION[name] = fn
        MATCHES.pop(name, None)
        if matches is not None:
            MATCHES[name] = matches
        return fn

    return add


def register_packed(name: str) -> Callable[[PackedAttentionFn], PackedAttentionFn]:
    """Decorator: `fn(q, k, v, spans, scale)` computes attention `name` on packed input, each text alone."""

    def add(fn: PackedAttentionFn) -> PackedAttentionFn:
        PACKED[name] = fn
        return fn

    return add


def get_attention(name: str) -> AttentionFn:
    try:
        return ATTENTION[name]
    except KeyError:
        raise ValueError(f"unknown attention {name!r}; choose one of {sorted(ATTENTION)}") from None


def get_packed_attention(name: str) -> PackedAttentionFn:
    """Attention `name` for packed input: its registered packed form, else one call per text."""
    return PACKED.get(name) or per_text(get_attention(name))


def per_text(attend: AttentionFn, mask_for: MaskRule | None = None) -> PackedAttentionFn:
    """Packed attention as one call of `attend` per text, each call seeing nothing but that text; mask_for(T, device)
    gives the mask of a text of T tokens alone (a local layer's window), None by default."""

    def packed(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, spans: Spans, scale: float) -> torch.Tensor:
        return torch.cat([attend(q[:, :, a:b], k[:, :, a:b], v[:, :, a:b],
                                 None if mask_for is None else mask_for(b - a, q.device), scale)
                          for a, b in spans], dim=2)

    return packed


# reproduces transformers v5.x models/bert/modeling_bert.py eager_attention_forward + masking_utils.eager_mask
@register_attention("eager", matches="eager")
def eager(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float) -> torch.Tensor:
    """The textbook math, op for op as transformers' eager path: padded keys get the dtype's lowest value added."""
    scores = torch.matmul(q, k.transpose(2, 3)) * scale  # (B, nh, T, T)
    if mask is not None:
        lowest = torch.finfo(scores.dtype).min
        scores = scores + torch.where(mask, torch.zeros((), dtype=scores.dtype, device=mask.device), lowest)
    probs = torch.softmax(scores, dim=-1)
    return torch.matmul(probs, v)  # (B, nh, T, hs)


# reproduces transformers v5.x integrations/sdpa_attention.py sdpa_attention_forward (encoder, no dropout)
@register_attention("sdpa", matches="sdpa")
def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float) -> torch.Tensor:
    """PyTorch's fused kernel (flash / memory-efficient / math, chosen by PyTorch)."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)  # (B, nh, T, hs)


@register_packed("sdpa")
def sdpa_packed(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, spans: Spans, scale: float) -> torch.Tensor:
    """sdpa on packed (1, nh, N, hs) input: on CUDA in float16 / bfloat16, one variable-length flash-attention call
    for the whole row; elsewhere one call per text, in bfloat16 on a CPU without AMX the long texts as two matrix
    multiplies (`bfloat16_math`). (Stacking texts of one length into one call of PyTorch's CPU flash kernel is not the
    same: a stacked text's bits can depend on the stack it is in; docs/performance.md, "Measured and not kept".)"""
    if varlen_fits(q):
        return varlen(q, k, v, spans, scale)
    if not bfloat16_math_fits(q):
        return per_text(sdpa)(q, k, v, spans, scale)
    return torch.cat([(bfloat16_math if b - a >= BFLOAT16_MATH_FROM else sdpa)(
        q[:, :, a:b], k[:, :, a:b], v[:, :, a:b], None, scale) for a, b in spans], dim=2)


BFLOAT16_MATH_FROM = 128  # tokens: below it, PyTorch's flash kernel was the faster (docs/performance.md)


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
    """softmax(q k^T * scale) v for one unpadded text as two bfloat16 matrix multiplies, which use the CPU's bfloat16
    dot products. Roundings: q * scale, the scores and the weights are each rounded to bfloat16 (softmax itself
    computes in float32); transformers' eager attention in bfloat16 rounds the scores before and after scaling
    instead of q, and the tests hold this to its accuracy. Packed execution's texts have no padding: mask is None."""
    if mask is not None:
        raise ValueError("bfloat16_math computes one unpadded text: mask must be None")
    scores = torch.matmul(q * scale, k.transpose(2, 3))  # (1, nh, T, T)
    return torch.matmul(torch.softmax(scores, dim=-1), v)  # (1, nh, T, hs)


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


# --- research variants: they change the computation on purpose --------------------------------------------------------


def sliding_window(window: int) -> AttentionFn:
    """Local attention: a token sees only the keys at most `window` positions away (Longformer's local part)."""

    def local(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float) -> torch.Tensor:
        positions = torch.arange(q.shape[2], device=q.device)
        band = (positions[:, None] - positions[None, :]).abs() <= window  # (T, T): True inside the window
        return eager(q, k, v, band if mask is None else band & mask, scale)  # mask -> (B, 1, T, T)

    return local


register_attention("sliding_window")(sliding_window(8))


@register_attention("linear")
def linear(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float) -> torch.Tensor:
    """Linear attention (Katharopoulos et al., 2020): softmax(q k^T) is replaced by phi(q) phi(k)^T with
    phi = elu + 1, so the cost grows linearly with length. `scale` is unused: phi replaces the softmax."""
    q, k = F.elu(q) + 1, F.elu(k) + 1  # positive features, (B, nh, T, hs)
    if mask is not None:
        k = k * mask.transpose(-1, -2).to(k.dtype)  # padded keys contribute nothing; mask -> (B, 1, T, 1)
    context = torch.matmul(k.transpose(2, 3), v)  # (B, nh, hs, hs): sum over keys of phi(k) v^T
    normalizer = torch.matmul(q, k.sum(dim=2, keepdim=True).transpose(2, 3))  # (B, nh, T, 1)
    return torch.matmul(q, context) / normalizer.clamp(min=1e-6)


# --- causal attention: decoders ---------------------------------------------------------------------------------------

CAUSAL: dict[str, AttentionFn] = {}  # name -> its causal form (see the module docstring)


def register_causal(name: str, *, matches: str | None = None) -> Callable[[AttentionFn], AttentionFn]:
    """Decorator: make `fn` the causal form of attention `name`, for decoders. matches: as register_attention's."""

    def add(fn: AttentionFn) -> AttentionFn:
        CAUSAL[name] = fn
        if matches is not None:
            MATCHES[name] = matches
        return fn

    return add


def get_causal_attention(name: str) -> AttentionFn:
    try:
        return CAUSAL[name]
    except KeyError:
        raise ValueError(f"attention {name!r} has no causal form for a decoder; choose one of "
                         f"{sorted(CAUSAL)}") from None


def causal_triangle(T: int, device: torch.device) -> torch.Tensor:
    """bool (1, 1, T, T): True where query t may attend to key s, that is s <= t."""
    positions = torch.arange(T, device=device)
    return positions[None, None, :, None] >= positions[None, None, None, :]


# reproduces transformers v5.x masking_utils.sdpa_mask (causal_mask_function and padding_mask_function)
def causal_mask(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """(B, T) of 1 = real token, 0 = padding -> bool (B, 1, T, T): True where query t may attend to key s, that is
    s <= t and s is a real token. None when nothing is padded, as transformers does (the kernel's is_causal instead).
    A padded query row may have no True key at all (left padding); it is padding, and no real token reads it."""
    if attention_mask is None or bool(attention_mask.all()):
        return None
    triangle = causal_triangle(attention_mask.shape[1], attention_mask.device)
    return triangle & attention_mask.bool()[:, None, None, :]  # (B, 1, T, T)


# reproduces transformers v5.x cache_utils.DynamicLayer.update, in a forward pass that starts with an empty cache
def as_cached(x: torch.Tensor) -> torch.Tensor:
    """Keys or values (B, nkv, T, hs) laid out as transformers' KV cache hands them to attention: copied to contiguous
    memory (the cache concatenates them onto its empty store). The values do not change, the layout does, and matrix
    kernels may sum in another order for another layout: on AMD EPYC CPUs, MKL multiplies q by a strided k^T (which
    matmul copies into plain rows) and by the cache's transposed view in two orders. transformers' decoders (Qwen3,
    Gemma 3) run with the cache unless config.json's use_cache is false; sentence-transformers turns it off."""
    return x.contiguous()


# reproduces transformers v5.x models/qwen3/modeling_qwen3.py repeat_kv
def repeat_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    """(B, nkv, T, hs) -> (B, nkv * groups, T, hs): each key / value head repeated for the query heads it serves."""
    if groups == 1:
        return x
    B, nkv, T, hs = x.shape
    return x[:, :, None, :, :].expand(B, nkv, groups, T, hs).reshape(B, nkv * groups, T, hs)


# reproduces transformers v5.x models/qwen3/modeling_qwen3.py eager_attention_forward + masking_utils.eager_mask
@register_causal("eager", matches="eager")
def causal_eager(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                 scale: float) -> torch.Tensor:
    """The textbook math for a decoder: `upcast_eager` (below) with the causal mask always added."""
    return upcast_eager(q, k, v, causal_triangle(q.shape[2], q.device) if mask is None else mask, scale)


# reproduces transformers v5.x integrations/sdpa_attention.py sdpa_attention_forward (decoder, no cache)
@register_causal("sdpa", matches="sdpa")
def causal_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                scale: float) -> torch.Tensor:
    """PyTorch's fused kernel: with is_causal where nothing is padded, else with the mask; grouped keys as
    transformers hands them to it (kv_heads_for_sdpa)."""
    k, v, options = kv_heads_for_sdpa(q, k, v, mask)
    causal = q.shape[2] > 1 and mask is None
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, is_causal=causal, **options)


# reproduces transformers v5.x integrations/sdpa_attention.py use_gqa_in_sdpa + repeat_kv (CPU, CUDA)
def kv_heads_for_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
                      ) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Grouped keys for PyTorch's kernel: shared by the kernel itself (enable_gqa) where there is no mask and the head
    size is at most 256, else repeated for each query head. (transformers reshapes a single query instead, q_length
    1, a decoding step; with one key its weight is exactly 1 either way, and encoders never decode.)"""
    if k.shape[1] == q.shape[1]:
        return k, v, {}
    if mask is None and k.shape[-1] == v.shape[-1] <= 256:
        return k, v, {"enable_gqa": True}
    groups = q.shape[1] // k.shape[1]
    return repeat_kv(k, groups), repeat_kv(v, groups), {}


# --- the newer encoders (ModernBERT, Gemma 3): softmax in float32, grouped keys, local layers ----------------------
#
# Their attention is bidirectional like BERT's, with two differences in the arithmetic: the softmax is taken in
# float32 (as the decoders'), and k, v may have fewer heads than q. And their local layers attend within a window:
# the family builds that mask (`band`, below) by transformers' rules, and the variant gets it like any mask. A variant
# registered with ignores_window=True is handed the global layers' mask on local layers too.

MODERN: dict[str, AttentionFn] = {}  # name -> its form for the newer encoders
IGNORES_WINDOW: set[str] = set()  # names whose local layers attend globally


def register_modern(name: str, *, matches: str | None = None,
                    ignores_window: bool = False) -> Callable[[AttentionFn], AttentionFn]:
    """Decorator: make `fn` the form of attention `name` for ModernBERT and Gemma 3. matches: as
    register_attention's; ignores_window: local layers get no window (every layer global)."""

    def add(fn: AttentionFn) -> AttentionFn:
        MODERN[name] = fn
        IGNORES_WINDOW.discard(name)
        if ignores_window:
            IGNORES_WINDOW.add(name)
        if matches is not None:
            MATCHES[name] = matches
        return fn

    return add


def get_modern_attention(name: str) -> AttentionFn:
    try:
        return MODERN[name]
    except KeyError:
        raise ValueError(f"attention {name!r} has no form for ModernBERT / Gemma 3; choose one of "
                         f"{sorted(MODERN)}") from None


def set_local_global_attention(layers: Sequence[torch.nn.Module], name: str,
                               masks: Callable[..., dict[str, torch.Tensor | None]], window: int) -> None:
    """Give each layer (its `kind` a layer type, its `attention` a module with `attend` / `attend_packed`) attention
    `name`, and the layer type whose mask it reads (`mask_kind`): its own, or the global layers' where the variant
    ignores the window. masks(attention_mask, T, window, device) -> {layer type: mask} is the family's rule; packed
    input runs each text alone with the mask it would get unpadded."""
    attend = get_modern_attention(name)
    for layer in layers:
        kind = "full_attention" if name in IGNORES_WINDOW else layer.kind
        layer.mask_kind = kind
        layer.attention.attend = attend
        layer.attention.attend_packed = per_text(attend, lambda T, device, kind=kind: masks(None, T, window,
                                                                                             device)[kind])


def band(T: int, radius: int, device: torch.device) -> torch.Tensor:
    """bool (1, 1, T, T): True where query i may attend to key j in a local layer, |i - j| <= radius."""
    positions = torch.arange(T, device=device)
    return (positions[None, None, :, None] - positions[None, None, None, :]).abs() <= radius


# reproduces transformers v5.x models/gemma3/modeling_gemma3.py eager_attention_forward (no soft-capping); ModernBERT's
# is the same with as many key heads as query heads
@register_modern("eager", matches="eager")
def upcast_eager(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                 scale: float) -> torch.Tensor:
    """Keys repeated for their query heads, the mask added (the dtype's lowest value where a key may not be seen),
    and the softmax taken in float32 (unlike BERT's eager)."""
    groups = q.shape[1] // k.shape[1]
    k, v = repeat_kv(k, groups), repeat_kv(v, groups)
    scores = torch.matmul(q, k.transpose(2, 3)) * scale  # (B, nh, T, T)
    if mask is not None:
        scores = scores + torch.where(mask, torch.zeros((), dtype=scores.dtype, device=mask.device),
                                      torch.finfo(scores.dtype).min)
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
    return torch.matmul(probs, v)  # (B, nh, T, hs)


# reproduces transformers v5.x integrations/sdpa_attention.py sdpa_attention_forward (bidirectional, no cache)
@register_modern("sdpa", matches="sdpa")
def upcast_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                scale: float) -> torch.Tensor:
    """PyTorch's fused kernel, its softmax its own; grouped keys as transformers hands them to it
    (kv_heads_for_sdpa)."""
    k, v, options = kv_heads_for_sdpa(q, k, v, mask)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, **options)


# research variant: the window ignored, every layer global (docs/attention.md, "Local layers made global")
register_modern("no_window", ignores_window=True)(upcast_eager)
