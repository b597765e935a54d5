"""Attention: one contract every family honours, the reference forms that reproduce transformers, and the research
variants.

The contract. Every attention variant is a function

    fn(q, k, v, mask, scale, bias=None) -> out

- q:     (B, H, T, D) queries; k, v: (B, H_kv, T, D), H_kv dividing H (grouped-query attention: `repeat_kv`
         repeats each key / value head for the query heads it serves);
- mask:  None where every key may be attended, else bool broadcastable to (B, 1, T, T), True where query i may
         attend to key j. It already holds everything the family and the layer decide: the padding, a decoder's
         causal triangle, a local layer's band. Every row has a True key (a padded query may get its own, and no
         real token reads a padded one), so masking with -inf never makes NaN;
- scale: the factor applied to q k^T (1 / sqrt(D); Gemma's: query_pre_attn_scalar ** -0.5);
- bias:  positions that enter as scores (relative buckets, ALiBi), float broadcastable to (B, H, T, T), added to
         the scaled scores. A family that has one hands it by name and refuses a variant that takes no `bias`;
- out:   (B, H, T, D).

Register a variant once with `@register_attention("name")` and select it on any family with `attention="name"`.

The reference forms. `eager` and `sdpa` name transformers' own implementations, and each family has its own forms
of them (below: the BERT family's, the decoders' and the newer encoders'). They keep what reproducing transformers
bit for bit needs to themselves: the softmax in float32 or not, PyTorch's kernel called with `is_causal` where
nothing is padded, when a mask is left out, how grouped keys reach the kernel. So each family hands its reference
forms the mask by transformers' rules (a decoder's None: causal, nothing padded), and `bind` turns that into the
contract's mask for every other variant.

Packed execution (runtime/batching.py) lays the texts of a batch end to end in one row, and each text attends to
itself alone: one call per text, with the mask the text would get unpadded (`per_text`). A variant may register a
faster packed form, `@register_packed("name")`, `fn(q, k, v, spans, scale)` on the whole (1, H, N, D) row; it
serves the layers where a text alone attends to every key. A family's own reference form may have a faster form for
one text alone, `@register_text_form(form)`, which the per-text calls take instead. `Attend`, built by `bind` for each
layer, is the one place that chooses among them.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import os
import sys
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

AttentionFn = Callable[..., torch.Tensor]  # fn(q, k, v, mask, scale, bias=None) -> out, the contract above
Spans = Sequence[tuple[int, int]]  # text i is tokens spans[i][0]:spans[i][1] of the packed row
PackedAttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, Spans, float], torch.Tensor]
MaskRule = Callable[[int, torch.device], torch.Tensor | None]  # (T, device) -> the mask of one unpadded text
Completion = Callable[[torch.Tensor | None, int, torch.device], torch.Tensor | None]  # reference mask -> contract's
REFERENCE = ("eager", "sdpa")  # transformers' attn_implementation names: every family has its own forms of these


# --- the registry -----------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)  # compared and hashed as itself, as the function it wraps
class Variant:
    """A registered attention: its function, the transformers implementation it reproduces bit for bit on which
    families (family -> attn_implementation; "*": every family), whether local layers keep their window, and its
    packed form, if faster than one call per text. Called, it is its function."""

    fn: AttentionFn
    matches: Mapping[str, str] = dataclasses.field(default_factory=dict)
    windows: bool = True
    packed: PackedAttentionFn | None = None

    def __call__(self, *args, **kwargs) -> torch.Tensor:
        return self.fn(*args, **kwargs)


ATTENTION: dict[str, Variant] = {}


def register_attention(name: str, *, matches: str | Mapping[str, str] | None = None,
                       windows: bool = True) -> Callable[[AttentionFn], AttentionFn]:
    """Decorator: make `fn` selectable as `attention=name` on every family. Re-registering a name replaces it,
    claims and packed form included.

    matches: the transformers attn_implementation ("eager", "sdpa") `fn` reproduces exactly, on every family, or
    per family ({"bert": "eager"}; a family's name is its record's, model/family.py); `minienc parity` then holds it to
    bit-exactness there. windows=False: local layers (ModernBERT, Gemma 3) get the global layers' mask.
    """
    if name in REFERENCE:
        raise ValueError(f"{name!r} cannot be registered: eager and sdpa are transformers' own forms (each family "
                         f"has its own); register yours under another name")

    claims = {"*": matches} if isinstance(matches, str) else dict(matches or {})
    wrong = [implementation for implementation in claims.values() if implementation not in REFERENCE]
    if wrong:
        raise ValueError(f"matches= names transformers' implementations, {list(REFERENCE)}; got {wrong}")

    def add(fn: AttentionFn) -> AttentionFn:
        ATTENTION[name] = Variant(fn, claims, windows)
        return fn

    return add


def register_packed(name: str) -> Callable[[PackedAttentionFn], PackedAttentionFn]:
    """Decorator: `fn(q, k, v, spans, scale)` computes the registered attention `name` on a packed row, each text
    alone, where a text alone attends to every key."""

    def add(fn: PackedAttentionFn) -> PackedAttentionFn:
        ATTENTION[name] = dataclasses.replace(get_attention(name), packed=fn)
        return fn

    return add


TEXT_FORMS: dict[AttentionFn, AttentionFn] = {}  # a family's reference form -> its faster form for one text alone


def register_text_form(form: AttentionFn) -> Callable[[AttentionFn], AttentionFn]:
    """Decorator: `fn(q, k, v, mask, scale)` computes the family form `form` on one unpadded text (mask: the text's
    own by the family's rules), where it chooses another way (runtime/attention.py), else by calling `form`. Packed
    execution calls it in place of `form` for each text; padded execution keeps `form`, transformers' own."""

    def add(fn: AttentionFn) -> AttentionFn:
        TEXT_FORMS[form] = fn
        return fn

    return add


def get_attention(name: str) -> Variant:
    """The variant registered as `name`; MODULE:FUNCTION, not registered yet, is imported first (load_variant)."""
    if name not in ATTENTION and ":" in name:
        load_variant(name)
    try:
        return ATTENTION[name]
    except KeyError:
        raise ValueError(f"unknown attention {name!r}; choose one of {sorted(ATTENTION)}, or MODULE:FUNCTION for "
                         f"a variant in your own module") from None


def import_variants(spec: str, module_name: str):
    """The module a MODULE:FUNCTION spec names, as Python finds it, else from the current folder (appended to
    sys.path, after everything else: as `python -m` has it). An error says which: the module, or one of its imports."""
    for attempt in (1, 2):
        try:
            return importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name != module_name:  # the module is there; one of its own imports is not
                raise ImportError(f"attention {spec}: importing {module_name!r} failed: {err}") from None
            if attempt == 2 or os.getcwd() in sys.path:
                raise ImportError(f"attention {spec}: cannot import {module_name!r} ({err}); run from the folder "
                                  f"that holds it, or put that folder on PYTHONPATH") from None
            sys.path.append(os.getcwd())


def load_variant(spec: str) -> None:
    """Register FUNCTION of MODULE as attention `spec` ("MODULE:FUNCTION"). MODULE is imported as Python finds it,
    else from the current folder. A function its module registered itself (`@register_attention`, under one name)
    keeps that registration, claims and windows included; else it is registered plainly."""
    module_name, _, function_name = spec.partition(":")
    module = import_variants(spec, module_name)
    fn = getattr(module, function_name, None)
    if not callable(fn):
        raise ValueError(f"attention {spec}: {module_name!r} has no function {function_name!r}")
    names = [name for name, variant in ATTENTION.items() if variant.fn is fn]
    if len(names) > 1:
        raise ValueError(f"attention {spec}: that function is registered as {names}; name one of them instead")
    ATTENTION[spec] = ATTENTION[names[0]] if names else Variant(fn)


def matches_for(name: str, family: str) -> str | None:
    """The transformers implementation attention `name` claims to reproduce exactly on `family`, or None."""
    claims = get_attention(name).matches
    return claims.get(family, claims.get("*"))


# reproduces transformers v5.x models/qwen3/modeling_qwen3.py repeat_kv
def repeat_heads(x: torch.Tensor, groups: int) -> torch.Tensor:
    """(B, nkv, T, hs) -> (B, nkv * groups, T, hs): each key / value head repeated for the query heads it serves."""
    if groups == 1:
        return x
    B, nkv, T, hs = x.shape
    return x[:, :, None, :, :].expand(B, nkv, groups, T, hs).reshape(B, nkv * groups, T, hs)


def repeat_kv(kv: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Keys or values (B, H_kv, T, D) repeated to q's H heads: the contract's grouped-query helper."""
    return repeat_heads(kv, q.shape[1] // kv.shape[1])


# --- one layer's attention: padded or packed ----------------------------------------------------------------------


def per_text(attend: AttentionFn, mask_for: MaskRule | None = None) -> PackedAttentionFn:
    """Packed attention as one call of `attend` per text, each call seeing nothing but that text; mask_for(T, device)
    gives the mask of a text of T tokens alone (a decoder's triangle, a local layer's band), None by default. A
    position bias comes for the longest text, (1, H, L, L), and a text of T tokens reads its top-left T x T: a
    relative bias depends on i - j alone, and each text counts from 0."""

    def packed(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, spans: Spans, scale: float,
               bias: torch.Tensor | None = None) -> torch.Tensor:
        out = []
        for a, b in spans:
            mask = None if mask_for is None else mask_for(b - a, q.device)
            extra = {} if bias is None else {"bias": bias[:, :, : b - a, : b - a]}
            out.append(attend(q[:, :, a:b], k[:, :, a:b], v[:, :, a:b], mask, scale, **extra))
        return torch.cat(out, dim=2)

    return packed


@dataclasses.dataclass(frozen=True, eq=False)
class Attend:
    """What a family's attention module calls, `attend(q, k, v, mask, scale, spans, bias)`: the mask by the family's
    (transformers') rules for padded input, spans for packed input, and the family's position bias if it has one
    (packed: for the longest text, per_text). complete(mask, T, device) turns the family's mask into the contract's
    (None: the family's mask is already the contract's)."""

    name: str
    padded: AttentionFn
    packed: PackedAttentionFn
    complete: Completion | None = None

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float,
                 spans: Spans | None = None, bias: torch.Tensor | None = None) -> torch.Tensor:
        extra = {} if bias is None else {"bias": bias}
        if spans is None:
            return self.padded(q, k, v, mask, scale, **extra)  # (B, nh, T, hs)
        return self.packed(q, k, v, spans, scale, **extra)  # (1, nh, N, hs): each text attends to itself alone

    def contract_mask(self, mask: torch.Tensor | None, T: int, device: torch.device) -> torch.Tensor | None:
        """The mask a contract variant gets where the family's rules give `mask`."""
        return mask if self.complete is None else self.complete(mask, T, device)


def bind(name: str, family: str, forms: Mapping[str, AttentionFn], alone: MaskRule | None = None,
         complete: Completion | None = None, bias: bool = False) -> Attend:
    """Attention `name` for one layer of `family`: the family's own form where `name` is eager or sdpa, else the
    registered variant, handed the contract's mask. alone(T, device): the family's mask of one unpadded text (None:
    no mask); complete: how the family's mask becomes the contract's (None: it already is); bias: the family adds
    positions to the scores, so a variant must take `bias`."""
    variant = get_attention(name)
    if bias and name not in forms and not takes_bias(variant.fn):
        raise ValueError(f"attention {name!r} takes no `bias`, and {family} adds its positions to the scores as one: "
                         f"give it a `bias=None` parameter that adds bias to the scaled scores (docs/attention.md)")
    if name in forms or complete is None:
        form, lone = forms.get(name, variant.fn), alone
    else:
        form = completed(variant.fn, complete)

        def lone(T: int, device: torch.device) -> torch.Tensor | None:
            return complete(None if alone is None else alone(T, device), T, device)

    everything = alone is None and complete is None and not bias  # a text alone attends to every key, unbiased
    own = variant.packed is not None and form is variant.fn  # the packed form computes this very function
    packed = variant.packed if own and everything else per_text(TEXT_FORMS.get(form, form), lone)
    return Attend(name, form, packed, complete)


def completed(fn: AttentionFn, complete: Completion) -> AttentionFn:
    """fn, handed the contract's mask where the family gives its own."""

    def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float,
               bias: torch.Tensor | None = None) -> torch.Tensor:
        extra = {} if bias is None else {"bias": bias}
        return fn(q, k, v, complete(mask, q.shape[2], q.device), scale, **extra)

    return attend


def takes_bias(fn: Callable) -> bool:
    """Whether `fn` accepts the contract's `bias` keyword."""
    parameters = inspect.signature(fn).parameters
    return "bias" in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())


# --- the BERT family's reference forms --------------------------------------------------------------------------------


# reproduces transformers v5.x models/bert/modeling_bert.py eager_attention_forward + masking_utils.eager_mask
def eager(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float) -> torch.Tensor:
    """The textbook math, op for op as transformers' eager path: masked keys get the dtype's lowest value added.
    (BERT's heads are never grouped; grouped keys, from a caller of the contract, are repeated first.)"""
    k, v = repeat_kv(k, q), repeat_kv(v, q)  # the same tensors where heads are not grouped
    scores = torch.matmul(q, k.transpose(2, 3)) * scale  # (B, nh, T, T)
    if mask is not None:
        lowest = torch.finfo(scores.dtype).min
        scores = scores + torch.where(mask, torch.zeros((), dtype=scores.dtype, device=mask.device), lowest)
    probs = torch.softmax(scores, dim=-1)
    return torch.matmul(probs, v)  # (B, nh, T, hs)


# reproduces transformers v5.x integrations/sdpa_attention.py sdpa_attention_forward (encoder, no dropout)
def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float) -> torch.Tensor:
    """PyTorch's fused kernel (flash / memory-efficient / math, chosen by PyTorch); grouped keys, from a caller of
    the contract, as kv_heads_for_sdpa hands them over (BERT's never are)."""
    k, v, options = kv_heads_for_sdpa(q, k, v, mask)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, **options)  # (B, nh, T, hs)


BERT_FORMS = {"eager": eager, "sdpa": sdpa}
ATTENTION["eager"] = Variant(eager, {"*": "eager"})  # directly: register_attention refuses the reference names
ATTENTION["sdpa"] = Variant(sdpa, {"*": "sdpa"})


# --- the decoders' reference forms (Qwen3): causal -----------------------------------------------------------------


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


def with_triangle(mask: torch.Tensor | None, T: int, device: torch.device) -> torch.Tensor:
    """A decoder's mask as the contract has it: the causal triangle where transformers' rules leave it out, and each
    padded query allowed its own key (`attending_itself`)."""
    return causal_triangle(T, device) if mask is None else attending_itself(mask, T, device)


def attending_itself(mask: torch.Tensor | None, T: int, device: torch.device) -> torch.Tensor | None:
    """mask with each query allowed its own key. A real token may always read itself, so only a padded query changes:
    one whose triangle or window holds no real key (left padding; padding past a window) gets one key, and a variant
    that masks with -inf gives it a finite row instead of NaN, which would reach real tokens through its value."""
    return None if mask is None else mask | torch.eye(T, dtype=torch.bool, device=device)


# reproduces transformers v5.x cache_utils.DynamicLayer.update, in a forward pass that starts with an empty cache
def as_cached(x: torch.Tensor) -> torch.Tensor:
    """Keys or values (B, nkv, T, hs) laid out as transformers' KV cache hands them to attention: copied to contiguous
    memory (the cache concatenates them onto its empty store). The values do not change, the layout does, and matrix
    kernels may sum in another order for another layout: on AMD EPYC CPUs, MKL multiplies q by a strided k^T (which
    matmul copies into plain rows) and by the cache's transposed view in two orders. transformers' decoders (Qwen3,
    Gemma 3) run with the cache unless config.json's use_cache is false; sentence-transformers turns it off."""
    return x.contiguous()


# reproduces transformers v5.x models/qwen3/modeling_qwen3.py eager_attention_forward + masking_utils.eager_mask
def causal_eager(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                 scale: float) -> torch.Tensor:
    """The textbook math for a decoder: `softmax_attention` (below) with the causal mask always added."""
    return softmax_attention(q, k, v, with_triangle(mask, q.shape[2], q.device), scale)


# reproduces transformers v5.x integrations/sdpa_attention.py sdpa_attention_forward (decoder, no cache)
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
    return repeat_kv(k, q), repeat_kv(v, q), {}


CAUSAL_FORMS = {"eager": causal_eager, "sdpa": causal_sdpa}


# --- the newer encoders' reference forms (ModernBERT, Gemma 3): softmax in float32, grouped keys, local layers -----
#
# Bidirectional like BERT, with the decoders' arithmetic: the softmax in float32 and k, v with fewer heads than q. Their
# local layers attend within a window: the family builds that mask (`band`) by transformers' rules and hands it to the
# form like any mask; the contract's is the same with each padded query allowed its own key (`attending_itself`).


def band(T: int, radius: int, device: torch.device) -> torch.Tensor:
    """bool (1, 1, T, T): True where query i may attend to key j in a local layer, |i - j| <= radius."""
    positions = torch.arange(T, device=device)
    return (positions[None, None, :, None] - positions[None, None, None, :]).abs() <= radius


# reproduces transformers v5.x models/gemma3/modeling_gemma3.py eager_attention_forward (no soft-capping; bias None);
# ModernBERT's is the same with as many key heads as query heads
def softmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float,
                      bias: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q k^T * scale + bias) v, the contract's plain form: keys repeated for their query heads, the bias
    added, the mask added (the dtype's lowest value where a key may not be seen), the softmax in float32."""
    k, v = repeat_kv(k, q), repeat_kv(v, q)
    scores = torch.matmul(q, k.transpose(2, 3)) * scale  # (B, nh, T, T)
    if bias is not None:
        scores = scores + bias
    if mask is not None:
        scores = scores + torch.where(mask, torch.zeros((), dtype=scores.dtype, device=mask.device),
                                      torch.finfo(scores.dtype).min)
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
    return torch.matmul(probs, v)  # (B, nh, T, hs)


# reproduces transformers v5.x integrations/sdpa_attention.py sdpa_attention_forward (bidirectional, no cache)
def upcast_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                scale: float) -> torch.Tensor:
    """PyTorch's fused kernel, its softmax its own; grouped keys as transformers hands them to it
    (kv_heads_for_sdpa)."""
    k, v, options = kv_heads_for_sdpa(q, k, v, mask)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, **options)


UPCAST_FORMS = {"eager": softmax_attention, "sdpa": upcast_sdpa}


def bind_local_global(layers: Sequence[torch.nn.Module], name: str, family: str,
                      masks: Callable[..., dict[str, torch.Tensor | None]], window: int) -> None:
    """Give each layer (its `kind` a layer type, its `attention` a module with `attend`) attention `name`, and the
    layer type whose mask it reads (`mask_kind`): its own, or the global layers' where the variant keeps no
    windows. masks(attention_mask, T, window, device) -> {layer type: mask} is the family's rule."""
    windows = get_attention(name).windows
    for layer in layers:
        kind = layer.kind if windows else "full_attention"
        layer.mask_kind = kind
        alone = lambda T, device, kind=kind: masks(None, T, window, device)[kind]  # noqa: E731
        layer.attention.attend = bind(name, family, UPCAST_FORMS, alone, complete=attending_itself)


# --- research variants: they change the computation on purpose, on every family ------------------------------------


def sliding_window(window: int) -> AttentionFn:
    """Local attention: a token sees only the keys at most `window` positions away, within what the family allows
    (Longformer's local part on an encoder; on a decoder, Mistral's sliding window)."""

    def local(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float,
              bias: torch.Tensor | None = None) -> torch.Tensor:
        near = band(q.shape[2], window, q.device)  # (1, 1, T, T): True inside the window
        return softmax_attention(q, k, v, near if mask is None else near & mask, scale, bias)

    return local


register_attention("sliding_window")(sliding_window(8))
# local layers made global (docs/attention.md, "Local layers made global"); elsewhere the plain softmax form
register_attention("no_window", windows=False)(softmax_attention)


@register_attention("linear")
def linear(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float) -> torch.Tensor:
    """Linear attention (Katharopoulos et al., 2020): softmax(q k^T) is replaced by phi(q) phi(k)^T with
    phi = elu + 1. `scale` is unused: phi replaces the softmax; a position bias has no scores to enter, so a family
    with one refuses it. Where the mask hides keys only (padding), the cost grows linearly with length; a mask that
    differs by query (a decoder's triangle, a band) is applied to the T x T weights, which costs as softmax does."""
    q, k = F.elu(q) + 1, F.elu(k) + 1  # positive features, (B, nh, T, hs)
    k, v = repeat_kv(k, q), repeat_kv(v, q)
    if mask is not None and mask.shape[-2] > 1:  # by query: weights masked one by one
        weights = torch.matmul(q, k.transpose(2, 3)) * mask.to(q.dtype)  # (B, nh, T, T)
        return torch.matmul(weights, v) / weights.sum(dim=-1, keepdim=True).clamp(min=1e-6)
    if mask is not None:
        k = k * mask.transpose(-1, -2).to(k.dtype)  # padded keys contribute nothing; mask -> (B, 1, T, 1)
    context = torch.matmul(k.transpose(2, 3), v)  # (B, nh, hs, hs): sum over keys of phi(k) v^T
    normalizer = torch.matmul(q, k.sum(dim=2, keepdim=True).transpose(2, 3))  # (B, nh, T, 1)
    return torch.matmul(q, context) / normalizer.clamp(min=1e-6)
