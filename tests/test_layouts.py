"""Memory layouts: every family hands each kernel that sums (the linear layers, attention's matrix products, softmax,
the norms) its inputs in the shapes and strides transformers hands them.

Matching the op order is not enough for bit-exactness: a matrix kernel may choose its code, and so its order of
summation, by the layout of its inputs. On an AMD EPYC (2026-12-07, torch 2.13.0, MKL 2024.2), `q @ k^T` with k a
strided view goes to MKL as SGEMM_BATCH(N, N) after matmul copies it, and with k contiguous (transformers' KV cache
makes it so) as SGEMM_BATCH(T, N) on a transposed view; the two differ in the last bit, where on an Intel Xeon they
agree. So the tests compare layouts directly, on every family, instead of waiting for the CPU that shows it.

What is not compared, and why: element-wise ops (each output element is one computation whatever the strides), the
embedding lookups (gathers), and the masks handed to sdpa (a mask enters as one addition or selection per score, so
its strides cannot change an order of summation; transformers materializes (B, 1, T, T) where minienc broadcasts).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest
import torch
import transformers
from torch.utils._python_dispatch import TorchDispatchMode

import minienc

from .conftest import padded_batch
from .test_modern import FAMILIES as MODERN_FAMILIES, batch as modern_batch, save_seeded
from .test_qwen3 import batch as qwen3_batch, qwen3_config, save_qwen3

# aten ops whose results depend on the order they sum in; sdpa's first three inputs only (q, k, v: see above)
SUMMING = {"linear", "matmul", "bmm", "mm", "addmm", "baddbmm", "softmax", "_softmax", "layer_norm",
           "native_layer_norm", "mean", "sum"}
SDPA = "scaled_dot_product_attention"
REPO = Path(__file__).resolve().parents[1]


class KernelLayouts(TorchDispatchMode):
    """Records, per aten op that sums, the (shape, strides) of each tensor it is handed, in call order."""

    def __init__(self):
        super().__init__()
        self.calls: dict[str, list] = defaultdict(list)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.__name__.split(".")[0]
        if name in SUMMING or name == SDPA:
            tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
            tensors = tensors[:3] if name == SDPA else tensors
            if tensors and tensors[0].is_floating_point():  # integer sums (of masks: counting) are exact
                self.calls[name].append([(tuple(t.shape), t.stride(), t.dtype) for t in tensors])
        return func(*args, **kwargs)


def run_recorded(model, ids: torch.Tensor, mask: torch.Tensor, reference: bool) -> tuple[torch.Tensor, dict]:
    layouts = KernelLayouts()
    with torch.inference_mode(), layouts:
        out = model(input_ids=ids, attention_mask=mask).last_hidden_state if reference else model(ids, mask)
    return out, dict(layouts.calls)


def assert_same_layouts(theirs: dict, ours: dict) -> None:
    assert sorted(ours) == sorted(theirs), "the two models call different kernels"
    for op in theirs:
        assert len(ours[op]) == len(theirs[op]), f"{op}: {len(ours[op])} calls, transformers {len(theirs[op])}"
        for i, (a, b) in enumerate(zip(theirs[op], ours[op])):
            assert a == b, f"{op} call {i}: transformers hands it {a}, minienc {b}"


def compare(folder: Path, ids: torch.Tensor, mask: torch.Tensor, attention: str, dtype: torch.dtype,
            use_cache: bool | None = None, **reference_options) -> None:
    """transformers' model as AutoModel loads it (with use_cache where given) against minienc's Encoder loaded
    alike: the same layouts at every summing kernel, and so the same bits."""
    cache = {} if use_cache is None else {"use_cache": use_cache}
    theirs = transformers.AutoModel.from_pretrained(folder, attn_implementation=attention, dtype=dtype, **cache,
                                                    **reference_options).eval()
    ours = minienc.Encoder.from_pretrained(folder, attention=attention, dtype=dtype, **cache)
    a, their_layouts = run_recorded(theirs, ids, mask, reference=True)
    b, our_layouts = run_recorded(ours, ids, mask, reference=False)
    assert_same_layouts(their_layouts, our_layouts)
    assert torch.equal(a[mask.bool()], b[mask.bool()])


DTYPES = pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
FORMS = pytest.mark.parametrize("attention", ["eager", "sdpa"])


@DTYPES
@FORMS
@pytest.mark.parametrize("family", ["bert", "roberta", "xlm-roberta"])
def test_bert_family(reference_dir, family, attention, dtype):
    folder = reference_dir(family)
    pad = 0 if family == "bert" else 1
    inputs = padded_batch([7, 1, 13, 4], 99, pad, side="right")
    # without BERT's pooler: minienc's encoder ends at the last hidden state (the pooler's linear is transformers')
    compare(folder, inputs["input_ids"], inputs["attention_mask"], attention, dtype, add_pooling_layer=False)


@DTYPES
@FORMS
@pytest.mark.parametrize("side", ["none", "right"])
def test_jina_v3(tmp_path_factory, side, attention, dtype):
    from .test_jina import batch as jina_batch, save_jina

    folder = save_jina(tmp_path_factory.mktemp("jina"))
    ids, mask = jina_batch(side)
    compare(folder, ids, mask, attention, dtype, add_pooling_layer=False)


@DTYPES
@FORMS
@pytest.mark.parametrize("side", ["none", "right"])
def test_gte(tmp_path_factory, side, attention, dtype):
    from .test_gte import batch as gte_batch, save_gte

    folder = save_gte(tmp_path_factory.mktemp("gte"))
    ids, mask = gte_batch(side)
    compare(folder, ids, mask, attention, dtype)


@DTYPES
@FORMS
@pytest.mark.parametrize("side", ["none", "right"])
def test_nomic_bert(tmp_path_factory, side, attention, dtype):
    from .test_nomic import batch as nomic_batch, save_nomic

    folder = save_nomic(tmp_path_factory.mktemp("nomic"))
    ids, mask = nomic_batch(side)
    compare(folder, ids, mask, attention, dtype)


@DTYPES
@FORMS
@pytest.mark.parametrize("side", ["none", "right"])
def test_distilbert(tmp_path_factory, side, attention, dtype):
    from .test_distilbert import batch as distilbert_batch, save_distilbert

    folder = save_distilbert(tmp_path_factory.mktemp("distilbert"))
    ids, mask = distilbert_batch(side)
    compare(folder, ids, mask, attention, dtype)


@DTYPES
@pytest.mark.parametrize("side", ["none", "right"])
def test_mpnet(tmp_path_factory, side, dtype):
    """MPNet: transformers' eager path (its only one), the relative position bias added to the scores."""
    from .test_mpnet import SHAPES, batch as mpnet_batch, save_mpnet

    folder = save_mpnet(tmp_path_factory.mktemp("mpnet"), **SHAPES["hs12"])
    ids, mask = mpnet_batch(side, length=40)
    compare(folder, ids, mask, "eager", dtype, add_pooling_layer=False)


@DTYPES
@pytest.mark.parametrize("use_cache", [True, False], ids=["cache", "no-cache"])
@pytest.mark.parametrize("family", ["llama", "qwen2", "mistral"])
def test_llama_family(tmp_path_factory, family, use_cache, dtype):
    """Llama, Qwen2 and Mistral: as many key heads as query heads (the case the cache's layout shows in), texts
    across Mistral's window, eager (the layouts sdpa gets are the same tensors)."""
    from .test_decoders import batch as decoder_batch, save_decoder

    folder = save_decoder(tmp_path_factory.mktemp(family), family, 4, 4)
    ids, mask = decoder_batch("left")
    compare(folder, ids, mask, "eager", dtype, use_cache)


@pytest.fixture(scope="module", params=[(4, 4, 16), (4, 2, 24)], ids=["4q-4kv", "4q-2kv"])
def qwen3_dir(request, tmp_path_factory) -> Path:
    return save_qwen3(tmp_path_factory.mktemp("qwen3"), qwen3_config(*request.param))


@DTYPES
@FORMS
@pytest.mark.parametrize("use_cache", [True, False], ids=["cache", "no-cache"])
@pytest.mark.parametrize("side", ["none", "left"])
def test_qwen3(qwen3_dir, side, use_cache, attention, dtype):
    """With the cache (transformers' default) keys and values reach attention contiguous; without it (as
    sentence-transformers runs) as views of the projections. As many key heads as query heads is the case that
    shows it: grouped heads are copied by repeat_kv either way."""
    ids, mask = qwen3_batch(seed=1, side=side)
    compare(qwen3_dir, ids, mask, attention, dtype, use_cache)


def save_modern(folder: Path, family: str, **overrides) -> Path:
    config, model_class = MODERN_FAMILIES[family]
    return save_seeded(folder, config(**overrides), model_class)


@pytest.fixture(scope="module")
def modernbert_dir(tmp_path_factory) -> Path:
    return save_modern(tmp_path_factory.mktemp("modernbert"), "modernbert")


@pytest.fixture(scope="module", params=[4, 2], ids=["4q-4kv", "4q-2kv"])
def gemma3_dir(request, tmp_path_factory) -> Path:
    return save_modern(tmp_path_factory.mktemp("gemma3"), "gemma3", num_key_value_heads=request.param)


SIDES = pytest.mark.parametrize("side", ["none", "right"])


@DTYPES
@FORMS
@SIDES
def test_modernbert(modernbert_dir, side, attention, dtype):
    """Texts longer than the window (40 tokens, window 8 each way)."""
    ids, mask = modern_batch(40, side)
    compare(modernbert_dir, ids, mask, attention, dtype)


@DTYPES
@FORMS
@pytest.mark.parametrize("use_cache", [None, False], ids=["config", "no-cache"])
@SIDES
def test_gemma3(gemma3_dir, side, use_cache, attention, dtype):
    """Gemma 3 keeps a cache as Qwen3 does (config.json's use_cache), over texts longer than its window."""
    ids, mask = modern_batch(40, side)
    compare(gemma3_dir, ids, mask, attention, dtype, use_cache)


@pytest.mark.parametrize("name", ["tiny-qwen3-embedding", "tiny-embeddinggemma"])
def test_sentence_encoder_lays_out_as_sentence_transformers(name):
    """The encoder a SentenceEncoder runs hands its kernels what sentence-transformers' own loaded model hands them
    (sentence-transformers sets use_cache false on the config it loads: read from its model, not assumed)."""
    from sentence_transformers import SentenceTransformer

    folder = REPO / "weights" / name
    theirs = SentenceTransformer(str(folder), device="cpu")[0].auto_model.eval()
    ours = minienc.SentenceEncoder.from_pretrained(folder, execution="padded").encoder
    ids, mask = qwen3_batch(seed=5, side="left")
    ids = ids % ours.config.vocab_size
    a, their_layouts = run_recorded(theirs, ids, mask, reference=True)
    b, our_layouts = run_recorded(ours, ids, mask, reference=False)
    assert_same_layouts(their_layouts, our_layouts)
    assert torch.equal(a[mask.bool()], b[mask.bool()])
