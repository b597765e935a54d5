"""`minienc trace --plot FILE`: one text's attention weights, for one layer and head, beside the mask that shaped
them (BERT's full square, a decoder's causal triangle, a local layer's band) and, where the family adds positions to
the scores (MPNet), that head's position bias.

The weights are read as the model runs: the layer's attention is wrapped, for that one forward pass, by one that also
computes softmax(q k^T * scale + bias) over the keys the contract's mask allows (model/attention.py; shared key heads
repeated for their query heads) and keeps the chosen head's; the pass itself computes what it always does. Drawing
needs matplotlib: `pip install 'minienc[plot]'`."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import torch

from .model.attention import Attend, repeat_kv


def recording(attend: Attend, head: int, kept: dict):
    """attend, which also keeps head `head`'s attention weights (T, T) in kept["weights"], and the mask in
    kept["allowed"]."""

    def wrapped(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float,
                spans=None, bias: torch.Tensor | None = None) -> torch.Tensor:
        T = q.shape[2]
        allowed = torch.ones(1, 1, T, T, dtype=torch.bool, device=q.device)
        contract = attend.contract_mask(mask, T, q.device)
        allowed = allowed if contract is None else allowed & contract
        keys = repeat_kv(k, q)  # (1, nh, T, hs)
        scores = (q[:, head] @ keys[:, head].transpose(1, 2)).float() * scale  # (1, T, T)
        if bias is not None:  # positions that enter as scores (MPNet's relative buckets)
            kept["bias"] = bias[0, head].float()  # (T, T)
            scores = scores + kept["bias"]
        kept["weights"] = torch.softmax(scores.masked_fill(~allowed[:, 0], float("-inf")), dim=-1)[0]
        kept["allowed"] = allowed[0, 0].expand(T, T)
        return attend(q, k, v, mask, scale, spans, bias)

    return wrapped


def attention_weights(model, text: str, layer: int, head: int) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """One text through a SentenceEncoder's encoder (alone, unpadded): its tokens, the weights (T, T) of `head` in
    `layer` (row: the token attending; column: the token read) and the mask (T, T) that allowed them."""
    kept = recorded(model, text, layer, head)
    return kept["tokens"], kept["weights"], kept["allowed"]


def check_layer_and_head(encoder, layer: int, head: int) -> None:
    """--layer and --head name a layer and a head of this encoder; an error says which range, before any work."""
    if not 0 <= layer < len(encoder.layers):
        raise ValueError(f"--layer must be from 0 to {len(encoder.layers) - 1}, got {layer}")
    heads = encoder.config.num_heads
    if not 0 <= head < heads:
        raise ValueError(f"--head must be from 0 to {heads - 1}, got {head}")


@torch.inference_mode()
def recorded(model, text: str, layer: int, head: int) -> dict:
    """attention_weights' three, as "tokens", "weights", "allowed", and "bias", the position bias (T, T) the head
    adds to its scores where the family has one (MPNet), else None."""
    encoder = model.encoder
    check_layer_and_head(encoder, layer, head)
    attention = encoder.layers[layer].attention
    kept: dict = {}
    original = attention.attend
    attention.attend = recording(original, head, kept)
    try:
        encoder(**model.tokenizer([text], device=model.device))
    finally:
        attention.attend = original
    bias = kept.get("bias")
    return {"tokens": model.tokenizer.encodings([text])[0].tokens, "weights": kept["weights"].cpu(),
            "allowed": kept["allowed"].cpu(), "bias": None if bias is None else bias.cpu()}


MAX_INCHES, MAX_LABELS = 16.0, 48  # a panel's largest side, and the most token labels an axis shows
CJK_FONTS = ("CJK", "WenQuanYi", "Droid Sans Fallback", "Han Sans")  # in the names of fonts that draw CJK characters


def use_cjk_font(plt, tokens: list[str]) -> None:
    """Where the tokens hold CJK characters, draw them with an installed font that has them (Noto CJK, WenQuanYi,
    Droid Sans Fallback, ...); without one, say so once on stderr, since matplotlib would draw empty boxes."""
    if not any("\u2e80" <= c <= "\u9fff" or "\uac00" <= c <= "\ud7af" for token in tokens for c in token):
        return
    from matplotlib import font_manager

    names = sorted({font.name for font in font_manager.fontManager.ttflist
                    if any(mark in font.name for mark in CJK_FONTS)})
    if names:
        plt.rcParams["font.sans-serif"] = [names[0], *plt.rcParams["font.sans-serif"]]
    else:
        print("minienc: no font with CJK characters is installed (e.g. fonts-noto-cjk): they are drawn as boxes",
              file=sys.stderr)


def plot_attention(path: str | Path, model, text: str, layer: int = 0, head: int = 0) -> Path:
    """Draw the weights beside the mask, and the position bias where the family adds one (MPNet), into `path` (PNG,
    or any format matplotlib writes by its suffix)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("--plot needs matplotlib: pip install 'minienc[plot]'") from None
    kept = recorded(model, text, layer, head)
    tokens, family = kept["tokens"], model.encoder.config.model_type
    size = min(max(4.0, 0.35 * len(tokens) + 2), MAX_INCHES)  # a long text: the same page, fewer labels
    every = max(1, -(-len(tokens) // MAX_LABELS))  # label every token, or every Nth where there are too many to read
    ticks = list(range(0, len(tokens), every))
    use_cjk_font(plt, tokens)
    panels = [(kept["weights"].numpy(), f"{family}: attention weights, layer {layer}, head {head}", "viridis", (0, 1)),
              (kept["allowed"].float().numpy(), "mask: which keys each token may read (black: may)", "Greys", (0, 1))]
    if kept["bias"] is not None:  # what the relative position buckets add to this head's scores
        bias = kept["bias"].numpy()
        panels.append((bias, f"position bias of head {head}: added to the scores", "coolwarm",
                       (-abs(bias).max(), abs(bias).max())))
    figure, grid = plt.subplots(1, len(panels), figsize=(len(panels) * size, size))
    for axes, (values, title, colours, (low, high)) in zip(grid, panels):
        image = axes.imshow(values, cmap=colours, vmin=low, vmax=high)
        if colours != "Greys":
            figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
        axes.set_title(title)
        axes.set_xticks(ticks, [tokens[i] for i in ticks], rotation=90, fontsize=7)
        axes.set_yticks(ticks, [tokens[i] for i in ticks], fontsize=7)
        axes.set_xlabel("key (the token read)")
        axes.set_ylabel("query (the token reading)")
    with warnings.catch_warnings():  # a font without CJK glyphs draws boxes for them, and says so once per glyph
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        figure.tight_layout()
        figure.savefig(path, dpi=100, bbox_inches="tight")  # no label cut off at the edge
    plt.close(figure)
    return Path(path)
