"""Poolers: token vectors (B, T, H) + attention mask (B, T) -> one vector per text (B, H); and the L2 normalizer.

Pure functions: nothing here changes its inputs. Each reproduces sentence-transformers v6.x Pooling op for op
(the same masks, sums, dtypes and constants, e.g. the 1e-9 clamp on token counts), so results match bit for bit.
Right and left padding both work: every pooler reads the mask, never assumes where padding sits.

Packed input (texts end to end, no padding) has `pool_packed`: the same poolers text by text, except mean and cls,
which take one call for the whole batch (mean sums each text in another order: within float32 rounding, not the
same bits as sentence-transformers).

SPLADE's pooling (sparse vectors) closes the file: an activation on each token's vocabulary scores, then max or sum
over the text's tokens. Those activations work in place, as sentence-transformers' SpladePooling does: the scores are
as large as the text times the vocabulary, and nothing reads them after.
"""

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

Pooler = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _accumulation_dtype(hidden: torch.Tensor) -> torch.dtype:
    """Half-precision sums are accumulated in float32, as sentence-transformers does."""
    return torch.float32 if hidden.dtype in (torch.float16, torch.bfloat16) else hidden.dtype


def cls(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The first real token (the [CLS] / <s> token; with left padding, the first non-padding position)."""
    first = mask.to(torch.int).argmax(dim=1)  # (B,)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), first]  # (B, H)


def max_over_tokens(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The largest value of each feature over the real tokens."""
    padding = mask.unsqueeze(-1).expand_as(hidden).to(hidden.dtype) == 0
    return hidden.masked_fill(padding, float("-inf")).max(dim=1).values  # (B, H)


def _masked_sum_and_count(hidden: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    weights = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    total = (hidden * weights).sum(dim=1, dtype=_accumulation_dtype(hidden))  # (B, H)
    count = torch.clamp(weights.sum(dim=1, dtype=_accumulation_dtype(hidden)), min=1e-9)  # (B, 1)
    return total, count


def mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The average of the real tokens."""
    total, count = _masked_sum_and_count(hidden, mask)
    return (total / count).to(hidden.dtype)


def mean_sqrt_len_tokens(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The sum of the real tokens divided by the square root of their number."""
    total, count = _masked_sum_and_count(hidden, mask)
    return (total / torch.sqrt(count)).to(hidden.dtype)


def weightedmean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A mean in which the i-th real token weighs i: later tokens count more (SGPT)."""
    dtype = _accumulation_dtype(hidden)
    real = mask.unsqueeze(-1).to(dtype)  # (B, T, 1)
    position = torch.arange(1, hidden.shape[1] + 1, device=hidden.device, dtype=dtype).view(1, -1, 1)
    if mask.numel():
        position = position - mask.to(torch.int32).argmax(dim=1).view(-1, 1, 1)  # count from the first real token
    weights = real * position
    total = (hidden * weights).sum(dim=1)
    return (total / torch.clamp(weights.sum(dim=1), min=1e-9)).to(hidden.dtype)


def lasttoken(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The last real token (decoder-style embedding models)."""
    seq_len, width = hidden.shape[1], hidden.shape[2]
    found, from_end = mask.flip(1).max(1)
    from_end = torch.where(found == 0, seq_len - 1, from_end)
    index = (seq_len - from_end - 1).unsqueeze(-1).unsqueeze(1).expand(-1, 1, width)  # (B, 1, H)
    weights = mask.unsqueeze(-1).expand_as(hidden).to(hidden.dtype)
    return torch.gather(hidden * weights, 1, index).squeeze(dim=1)


POOLERS: dict[str, Pooler] = {
    "cls": cls,
    "mean": mean,
    "max": max_over_tokens,
    "mean_sqrt_len_tokens": mean_sqrt_len_tokens,
    "weightedmean": weightedmean,
    "lasttoken": lasttoken,
}


def pool(hidden: torch.Tensor, mask: torch.Tensor, modes: tuple[str, ...]) -> torch.Tensor:
    """Apply each pooler in `modes` and concatenate: (B, H * len(modes))."""
    return torch.cat([POOLERS[mode](hidden, mask) for mode in modes], dim=-1)


# --- packed input: the texts' token vectors end to end, (N, H), and each text's (start, end) --------------------------


def _pooled_positions(spans: Sequence[tuple[int, int]], skip: int, device: torch.device) -> torch.Tensor:
    """(N,) True for the tokens pooled: all but each text's first `skip` (a prompt left out of pooling)."""
    lengths = torch.tensor([b - a for a, b in spans], device=device)
    starts = torch.tensor([a for a, _ in spans], device=device)
    position = torch.arange(int(lengths.sum()), device=device) - torch.repeat_interleave(starts, lengths)
    return position >= skip


def _mean_packed(hidden: torch.Tensor, spans: Sequence[tuple[int, int]], skip: int) -> torch.Tensor:
    """mean, one reduction per text over its own tokens (torch.segment_reduce), summed in float32 for half
    precision as mean() does."""
    lengths = torch.tensor([b - a for a, b in spans], device=hidden.device)
    values = hidden.to(_accumulation_dtype(hidden))
    count = lengths.to(values.dtype)
    if skip:
        values = values * _pooled_positions(spans, skip, hidden.device).to(values.dtype)[:, None]
        count = (lengths - skip).clamp(min=0).to(values.dtype)
    total = torch.segment_reduce(values, "sum", lengths=lengths, axis=0)  # (B, H)
    return (total / count.clamp(min=1e-9)[:, None]).to(hidden.dtype)


def _cls_packed(hidden: torch.Tensor, spans: Sequence[tuple[int, int]], skip: int) -> torch.Tensor:
    """cls: each text's first pooled token (its first token when the prompt covers it all, as cls() does)."""
    first = [a + (skip if skip < b - a else 0) for a, b in spans]
    return hidden[torch.tensor(first, device=hidden.device)]  # (B, H)


PACKED_POOLERS = {"mean": _mean_packed, "cls": _cls_packed}  # modes with a one-call form; the rest go text by text


def pool_packed(hidden: torch.Tensor, spans: Sequence[tuple[int, int]], modes: tuple[str, ...],
                skip: int = 0) -> torch.Tensor:
    """pool() for packed input: hidden (N, H) holds text i at rows spans[i]; -> (B, H * len(modes)). Every reduction
    covers one text's rows alone, so a text's vector does not depend on the texts around it."""
    starts, ends = [a for a, _ in spans], [b for _, b in spans]  # segment_reduce reads rows 0..N in order
    if not spans or any(b <= a for a, b in spans) or starts != [0, *ends[:-1]] or ends[-1] != hidden.shape[0]:
        raise ValueError(f"spans must cut the {hidden.shape[0]} rows into non-empty texts in order, each starting "
                         f"where the last ended, from 0; got {list(spans)[:8]}")
    pooled = []
    for mode in modes:
        if mode in PACKED_POOLERS:
            pooled.append(PACKED_POOLERS[mode](hidden, spans, skip))
            continue
        masks = [torch.arange(b - a, device=hidden.device)[None].ge(skip).long() for a, b in spans]  # (1, n) each
        pooled.append(torch.cat([POOLERS[mode](hidden[a:b][None], mask) for (a, b), mask in zip(spans, masks)]))
    return torch.cat(pooled, dim=-1)


def l2_normalize(vectors: torch.Tensor) -> torch.Tensor:
    """Scale each row to unit Euclidean length (a zero row stays zero)."""
    return F.normalize(vectors, p=2, dim=-1)


# reproduces sentence-transformers v6.2 SpladePooling: the activation, then max or sum over the text's tokens.
# In place on the (tokens, V) scores, which are as large as the text times the vocabulary, as SpladePooling does.
SPLADE_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": lambda scores: scores.relu_().log1p_(),  # log(1 + relu(x)): every SPLADE model
    "log1p_relu": lambda scores: scores.relu_().log1p_().log1p_(),  # log(1 + log(1 + relu(x))): OpenSearch's
}
SPLADE_POOLERS: dict[str, Callable[[torch.Tensor, int], torch.Tensor]] = {
    "max": lambda scores, dim: scores.amax(dim),  # SPLADE v2 and later
    "sum": lambda scores, dim: scores.sum(dim),  # the first SPLADE
}
