"""Every intermediate result of a forward pass, by stage name, and `trace`: one text walked through the pipeline
(a SentenceEncoder's, or a SparseEncoder's: the masked-LM head, the SPLADE activation and pooling).

Stages are read with forward hooks, so the model code stays free of inspection branches. The same stage names are
read from a transformers model, which is what `minienc parity` compares. BERT family:

    embedding_sum       word + token-type + position embeddings, before LayerNorm    (B, T, H)
    embeddings          after the embedding LayerNorm                                 (B, T, H)
    layer.{i}.attention attention block: LayerNorm(attention(x) + x)                  (B, T, H)
    layer.{i}.output    whole layer: LayerNorm(feed_forward(a) + a)                   (B, T, H)

Qwen3, ModernBERT and Gemma 3 (pre-norm, so each stage is the residual stream, and a final norm):

    embeddings          the token vectors (positions rotate q and k inside attention) (B, T, H)
                        (ModernBERT: after its LayerNorm; Gemma: times sqrt(H))
    layer.{i}.attention x + attention(norm(x))   (Gemma: x + norm(attention(norm(x)))) (B, T, H)
    layer.{i}.output    a + feed_forward(norm(a))                                     (B, T, H)
    norm                the final norm: the last hidden state                         (B, T, H)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .model.family import Stages, family_of
from .model.pooling import l2_normalize, pool


def _capture(points: list[tuple[str, nn.Module, bool]], run) -> dict[str, torch.Tensor]:
    """Hook (name, module, before) points, call run(), return each point's tensor (the first, if a tuple)."""
    stages: dict[str, torch.Tensor] = {}

    def hook(name: str, before: bool):
        def save(module, inputs, output=None):
            value = inputs[0] if before else output
            stages[name] = (value[0] if isinstance(value, tuple) else value).detach()

        return save

    handles = [
        module.register_forward_pre_hook(hook(name, True)) if before else module.register_forward_hook(hook(name, False))
        for name, module, before in points
    ]
    try:
        with torch.inference_mode():
            run()
    finally:
        for handle in handles:
            handle.remove()
    return stages


def points(model: nn.Module, where: Stages) -> list[tuple[str, nn.Module, bool]]:
    """The (stage, module, before) points of `model`, by its family's record (model/family.py, Stages)."""
    found = [(name, model.get_submodule(path), before) for name, path, before in where.embeddings]
    module, before = where.attention
    for i, layer in enumerate(model.get_submodule(where.layers)):
        found += [(f"layer.{i}.attention", layer.get_submodule(module), before), (f"layer.{i}.output", layer, False)]
    return found + ([("norm", model.get_submodule(where.final_norm), False)] if where.final_norm else [])


def capture(encoder: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """minienc's stages for one batch (see the module docstring for the names)."""
    return _capture(points(encoder, family_of(encoder.config.model_type).ours), lambda: encoder(**batch))


def capture_reference(model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same stages read from the transformers model the family is held to (its record's `reference`)."""
    family = family_of(model.config.model_type)
    inputs = {key: value for key, value in batch.items() if key != "token_type_ids" or family.token_types}
    return _capture(points(model, family.theirs), lambda: model(**inputs))


def last_stage(stages: dict[str, torch.Tensor]) -> str:
    """The stage that is the last hidden state: the final norm where there is one, else the last layer's output."""
    return "norm" if "norm" in stages else [name for name in stages if name.endswith(".output")][-1]


def summary(t: torch.Tensor, values: int = 4) -> dict[str, Any]:
    """Shape, L2 norm and the first few values of a tensor (of its first row, for a matrix)."""
    row = t.reshape(-1, t.shape[-1])[0] if t.dim() > 1 else t
    return {"shape": list(t.shape), "norm": float(t.float().norm()), "values": [round(float(x), 6) for x in row[:values]]}


def trace(model, text: str, prompt_name: str | None = None) -> dict[str, Any]:
    """One text through a SentenceEncoder, or a SparseEncoder (SPLADE), stage by stage, as plain data; the prompt
    encode() would put before it (prompt_name, else the model's default one) goes first, as there."""
    from .heads.sparse import SparseEncoder

    prompt = model.prompt_text(prompt_name, None)
    if isinstance(model, SparseEncoder):
        return {**trace_sparse(model, prompt + text), "text": text, "prompt": prompt}
    return trace_sentence(model, text, prompt)


def trace_encoder(sentence, text: str) -> tuple[dict[str, Any], torch.Tensor, torch.Tensor]:
    """Steps 1-3, tokenize, embeddings and the layers, of a SentenceEncoder's padded forward pass: the data, the last
    hidden state (1, T, H) and the attention mask (1, T)."""
    encoding = sentence.tokenizer.encodings([text])[0]
    batch = sentence.tokenizer([text], device=sentence.device)
    stages = capture(sentence.encoder, batch)
    config = sentence.encoder.config
    table = getattr(sentence.encoder, "embeddings", None)  # a position table (BERT, MPNet) has its own counting rule
    if hasattr(table, "position_ids"):
        position_ids = table.position_ids(batch["input_ids"]).expand_as(batch["input_ids"])
    else:
        position_ids = torch.arange(batch["input_ids"].shape[1])[None]  # 0, 1, 2, ...: rotation angles
    data = {
        "text": text,
        "family": config.model_type,
        "tokens": encoding.tokens,
        "input_ids": encoding.ids,
        "attention_mask": batch["attention_mask"][0].tolist(),
        "token_type_ids": batch["token_type_ids"][0].tolist(),
        "position_ids": position_ids[0].tolist(),
        "stages": {name: summary(t[0]) for name, t in stages.items()},
        "layer_kinds": layer_kinds(sentence.encoder),
    }
    return data, stages[last_stage(stages)], batch["attention_mask"]


@torch.inference_mode()
def trace_sentence(model, text: str, prompt: str = "") -> dict[str, Any]:
    """Then pooling, Dense and the normalizer: a SentenceEncoder's steps 4-5. The prompt's tokens (the leading
    special token with them) are left out of pooling where the folder says include_prompt false, as encode() does."""
    data, last, mask = trace_encoder(model, prompt + text)
    prompt_tokens = model.tokenizer.prefix_length(prompt) if prompt else 0
    skipped = 0 if model.include_prompt else prompt_tokens
    mask = mask.clone()
    mask[:, :skipped] = 0  # one text, unpadded: its first `skipped` tokens
    pooled = pool(last, mask, model.pooling)[0]  # (H,)
    vector, dense = pooled, []
    for layer in model.dense:  # the folder's Dense modules, in the order encode() applies them
        vector = layer(vector)
        dense.append({"in": layer.linear.in_features, "out": layer.linear.out_features,
                      "activation": activation_name(layer.activation), "vector": summary(vector)})
    return {**data, "text": text, "prompt": prompt, "prompt_tokens": prompt_tokens, "pooled_from": skipped,
            "pooling": "+".join(model.pooling), "pooled": summary(pooled), "dense": dense,
            "normalized": summary(l2_normalize(vector)) if model.normalize else None}


def layer_kinds(encoder) -> list[str] | None:
    """Each layer's attention where a window limits it: "global", or "local ±W" (a token reads the tokens at most W
    positions away: ModernBERT's and Gemma 3's local layers), or "local, last W" (itself and the W - 1 tokens before
    it: a decoder with a sliding window, Mistral's); None where every layer reads every token it may."""
    if getattr(encoder, "window", None):  # a decoder's window, kept by its attention (no_window: None)
        return [f"local, last {encoder.window}"] * len(encoder.layers)
    kinds = [getattr(layer, "mask_kind", None) for layer in encoder.layers]  # the mask it reads (no_window: global)
    if not any(kinds):
        return None
    window = getattr(encoder.config, "window", None)
    return ["global" if kind == "full_attention" else f"local ±{window}" for kind in kinds]


def activation_name(fn) -> str:
    """A Dense activation's name as the trace prints it (the identity is a lambda: "none")."""
    name = getattr(fn, "__name__", type(fn).__name__)
    return "none" if name == "<lambda>" else name


@torch.inference_mode()
def trace_sparse(model, text: str) -> dict[str, Any]:
    """Then a SparseEncoder's head, activation and pooling (steps 4-6): SparseEncoder.embed's ops on one text."""
    from .heads.sparse import keep_largest
    from .model.pooling import SPLADE_ACTIVATIONS, SPLADE_POOLERS

    data, last, _ = trace_encoder(model, text)
    scores = model.head(last)[0]  # (T, V): how strongly each token predicts each vocabulary entry
    weights = SPLADE_ACTIVATIONS[model.activation](scores.clone())  # (T, V)
    vector = SPLADE_POOLERS[model.pooling](weights, 0)  # (V,)
    if model.max_active_dims is not None:  # as encode(): only the largest values stay
        vector = keep_largest(vector[None], model.max_active_dims)[0]
    return {**data, "head": summary(scores), "activation": model.activation, "weights": summary(weights),
            "pooling": model.pooling, "pooled": summary(vector), "nonzero": int((vector != 0).sum()),
            "terms": [(token, round(weight, 6)) for token, weight in model.decode(vector, top_k=8)]}


ACTIVATION_FORMULAS = {"relu": "log(1 + relu(x))", "log1p_relu": "log(1 + log(1 + relu(x)))"}  # SPLADE_ACTIVATIONS


def format_trace(data: dict[str, Any]) -> str:
    """The trace as a textbook page: one stage a line, with shape, norm and a few values."""
    def row(name: str, s: dict[str, Any]) -> str:
        values = ", ".join(f"{v:+.4f}" for v in s["values"])
        return f"  {name:<22} {str(tuple(s['shape'])):<12} norm {s['norm']:9.4f}   [{values}, ...]"

    lines = [f"text: {data['text']!r}", "", "1. tokenize"]
    if data.get("prompt"):
        lines += [f"  {'prompt':<15} {data['prompt']!r} first" + (f": tokens 0..{data['prompt_tokens'] - 1}"
                                                                   if data.get("prompt_tokens") else "")]
    lines += [f"  {'tokens':<15} {data['tokens']}"]
    record = family_of(data["family"])
    words = record.trace_words  # None: a position table, as BERT's (the BERT family, MPNet)
    for key in ("input_ids", "attention_mask", *(("token_type_ids",) if record.token_types else ()), "position_ids"):
        lines.append(f"  {key:<15} {data[key]}")
    if words:
        embeddings, layers, final = words
        lines += ["", f"2. embeddings          ({embeddings}: positions rotate q and k in every layer)"]
        lines += [row("tokens", data["stages"]["embeddings"])]
        lines += ["", f"3. {layers}"]
    else:
        lines += ["", "2. embeddings          (shape and norm of the whole tensor; values of the first token)"]
        summed = "word+type+position" if record.token_types else "word+position"
        lines += [row(summed, data["stages"]["embedding_sum"]), row("LayerNorm", data["stages"]["embeddings"])]
        lines += ["", "3. encoder layers"]
    kinds = data.get("layer_kinds")
    for name, s in data["stages"].items():
        if name.startswith("layer."):
            index = int(name.split(".")[1])
            lines.append(row(name, s) + (f"   {kinds[index]}" if kinds and name.endswith(".attention") else ""))
    if "norm" in data["stages"]:
        lines += [row(words[2] if words else "final norm", data["stages"]["norm"])]
    lines += (sparse_steps if "head" in data else sentence_steps)(data, row)
    return "\n".join(lines)


def sentence_steps(data: dict[str, Any], row) -> list[str]:
    over = ""
    if data.get("prompt_tokens"):
        skipped = data["pooled_from"]
        over = (f" over tokens {skipped}..{len(data['tokens']) - 1}: the prompt's 0..{skipped - 1} left out, "
                f"include_prompt false" if skipped else ", the prompt's tokens included")
    lines, step = ["", f"4. pooling ({data['pooling']}{over})", row("pooled", data["pooled"])], 5
    for i, dense in enumerate(data.get("dense", [])):
        lines += ["", f"{step}. Dense {i + 1}  ({dense['in']} -> {dense['out']}, activation {dense['activation']})",
                  row("vector", dense["vector"])]
        step += 1
    if data["normalized"] is not None:
        lines += ["", f"{step}. L2 normalize", row("normalized", data["normalized"])]
    return lines


def sparse_steps(data: dict[str, Any], row) -> list[str]:
    terms = ", ".join(f"{token} {weight:.3f}" for token, weight in data["terms"])
    return ["", "4. masked-LM head    (a score per vocabulary entry, for each token)", row("scores", data["head"]),
            "", f"5. SPLADE activation ({ACTIVATION_FORMULAS[data['activation']]})", row("weights", data["weights"]),
            "", f"6. pooling ({data['pooling']} over the tokens)", row("vector", data["pooled"]),
            f"  {data['nonzero']} non-zero of {data['pooled']['shape'][0]}; largest: {terms}"]
