"""encode() keeps only what output_value asks for: its memory grows with the vectors it returns, not with the
token embeddings it computes on the way (issue: every text's result used to hold a view of its batch)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import transformers

WEIGHTS = Path(__file__).resolve().parent.parent / "weights"
HIDDEN = 256
N_TEXTS = 20_000

PROBE = """
import resource, sys
import minienc
model = minienc.SentenceEncoder.from_pretrained(sys.argv[1], execution=sys.argv[2])
texts = [f"text number {i} " + "word " * 25 for i in range(int(sys.argv[3]))]
model.encode(texts[:500])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
vectors = model.encode(texts)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(vectors.shape[0], vectors.shape[1], max(0, peak - before) * 1024, model.tokenizer.tokenize(texts[:1])[0].ids.__len__())
"""


@pytest.fixture(scope="module")
def wide_model(tmp_path_factory) -> Path:
    """One layer, 256 wide, tiny-bert's tokenizer: cheap to run, and each token's vector is 1 KiB."""
    import torch

    folder = tmp_path_factory.mktemp("wide")
    config = transformers.BertConfig(vocab_size=305, hidden_size=HIDDEN, num_hidden_layers=1, num_attention_heads=4,
                                     intermediate_size=HIDDEN, max_position_embeddings=128)
    torch.manual_seed(0)
    transformers.BertModel(config).save_pretrained(folder)
    shutil.copy(WEIGHTS / "tiny-bert" / "tokenizer.json", folder / "tokenizer.json")
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 64}))
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("execution", ["packed", "padded"])
def test_encode_memory_grows_with_the_vectors_only(wide_model, execution):
    """Peak RSS of a fresh process while it encodes 20,000 texts of ~30 tokens, beyond a warm-up. The vectors
    returned take 20 MB; keeping every text's token embeddings would take ~780 MB (before the fix, peak RSS grew
    by about 1,080 MB here). Allowed: the vectors, plus the tokenized texts (int32 ids) and one batch's working
    memory within 64 MB."""
    done = subprocess.run([sys.executable, "-c", PROBE, str(wide_model), execution, str(N_TEXTS)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    n, dim, growth, tokens = (int(v) for v in done.stdout.split())
    vectors_bytes = n * dim * 4
    token_embeddings_bytes = n * tokens * HIDDEN * 4
    assert (n, dim) == (N_TEXTS, HIDDEN) and token_embeddings_bytes > 25 * vectors_bytes
    assert growth < vectors_bytes + 64e6, f"peak grew {growth / 1e6:.0f} MB"
