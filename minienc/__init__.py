"""minienc: a minimal, hand-written Transformer encoder that matches transformers bit for bit."""

from .corpus import read_vectors
from .formats.m3 import convert_heads
from .heads.m3 import M3Encoder
from .heads.multivector import MultiVectorEncoder
from .heads.sentence import SentenceEncoder, SentenceTransformer
from .heads.sparse import SparseEncoder
from .loading.checkpoint import CheckpointError
from .loading.encoder import Encoder
from .model.attention import ATTENTION, get_attention, register_attention, register_packed, repeat_kv
from .runtime import attention as _packed_forms  # noqa: F401  (registers sdpa's packed forms)
from .model.bert import EncoderConfig
from .model.pooling import POOLERS, l2_normalize

__all__ = [
    "ATTENTION",
    "POOLERS",
    "CheckpointError",
    "Encoder",
    "EncoderConfig",
    "M3Encoder",
    "MultiVectorEncoder",
    "SentenceEncoder",
    "SentenceTransformer",
    "SparseEncoder",
    "convert_heads",
    "get_attention",
    "l2_normalize",
    "read_vectors",
    "register_attention",
    "register_packed",
    "repeat_kv",
]
__version__ = "0.1.0"


def __getattr__(name: str):
    """`minienc.ray` on first use, so that `import minienc` does not need Ray."""
    if name == "ray":
        import importlib

        return importlib.import_module(".ray", __name__)
    raise AttributeError(f"module 'minienc' has no attribute {name!r}")
