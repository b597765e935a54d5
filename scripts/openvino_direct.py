"""OpenVINO without sentence-transformers' backend: the OpenVINO runtime itself, in this process, on the model
converted from transformers by `openvino.convert_model`, batched and pooled as sentence-transformers does it.

For machines where the OpenVINO peer's venv (scripts/peers.sh) cannot be built, such as one that reaches no package
index: this needs only the `openvino` wheel (its dependencies: numpy, openvino-telemetry) beside the test
environment. It ran as fast as sentence-transformers' OpenVINO backend, with the same vectors, where both could
run (docs/performance.md, "Speed"). `python scripts/bench.py --openvino-direct` adds it, and takes it for the "vs OpenVINO"
column where the peer is missing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class LastHiddenState(torch.nn.Module):
    """A transformers encoder with positional inputs and one output, as tracing needs it. The mask goes in as
    (B, 1, 1, T) booleans: transformers 5 builds its 4-D mask from a 2-D one with code that does not trace."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):  # (B, T) each
        mask = attention_mask[:, None, None, :].bool()  # (B, 1, 1, T)
        return self.model(input_ids=input_ids, attention_mask=mask, token_type_ids=token_type_ids).last_hidden_state


def inputs(batch) -> tuple:
    """The model's inputs from a tokenizer's output; token types 0 where the tokenizer gives none (RoBERTa)."""
    types = batch["token_type_ids"] if "token_type_ids" in batch else batch["input_ids"] * 0
    return batch["input_ids"], batch["attention_mask"], types


def load(folder: Path, threads: int, max_seq_length: int, pooling: tuple[str, ...] = ("mean",),
         normalize: bool = True) -> tuple[Callable[..., np.ndarray], str]:
    """(encode(texts, batch_size) -> (n, dim) vectors, the precision OpenVINO chose for this CPU). It pools as
    all-MiniLM-L6-v2 does, by mean and L2-normalized: other poolings are refused."""
    if tuple(pooling) != ("mean",) or not normalize:
        raise SystemExit(f"openvino_direct pools by mean and L2-normalizes; this model pools by {'+'.join(pooling)}"
                         f"{'' if normalize else ', unnormalized'}: leave out --openvino-direct")
    import openvino
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModel.from_pretrained(folder, dtype=torch.float32).eval()
    example = tokenizer(["a b c", "d"], padding=True, return_tensors="pt")
    with torch.no_grad():
        converted = openvino.convert_model(LastHiddenState(model), example_input=inputs(example))
    for port, name in zip(converted.inputs, INPUTS):
        port.get_tensor().set_names({name})
        port.get_node().set_partial_shape(openvino.PartialShape([-1, -1]))  # any batch, any length
    converted.validate_nodes_and_infer_types()
    # the default precision: bfloat16 where the CPU has bfloat16 instructions, as sentence-transformers' backend gets
    compiled = openvino.Core().compile_model(converted, "CPU", {"INFERENCE_NUM_THREADS": threads})
    request = compiled.create_infer_request()

    def encode(texts: list[str], batch_size: int = 32) -> np.ndarray:
        order = np.argsort([-len(t) for t in texts], kind="stable")  # longest first, as sentence-transformers
        vectors = np.empty((len(texts), model.config.hidden_size), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            chosen = order[start : start + batch_size]
            batch = tokenizer([texts[i] for i in chosen], padding=True, truncation=True, max_length=max_seq_length,
                              return_tensors="np")
            hidden = request.infer(dict(zip(INPUTS, inputs(batch))))[compiled.outputs[0]]  # (B, T, H)
            mask = batch["attention_mask"][..., None].astype(np.float32)  # (B, T, 1)
            pooled = (hidden * mask).sum(1) / np.clip(mask.sum(1), 1e-9, None)  # mean pooling
            vectors[chosen] = pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
        return vectors

    return encode, compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
