"""minienc: a minimal, hand-written Transformer encoder that matches transformers bit for bit."""

from .attention import ATTENTION, get_attention, register_attention
from .checkpoint import CheckpointError
from .config import EncoderConfig
from .corpus import read_vectors
from .model import Encoder
from .pooling import POOLERS, l2_normalize
from .m3 import M3Encoder, convert_heads
from .multivector import MultiVectorEncoder
from .sentence import SentenceEncoder, SentenceTransformer
from .sparse import SparseEncoder

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
]
__version__ = "0.1.0"


def __getattr__(name: str):
    """`minienc.ray` on first use, so that `import minienc` does not need Ray."""
    if name == "ray":
        import importlib

        return importlib.import_module(".ray", __name__)
    raise AttributeError(f"module 'minienc' has no attribute {name!r}")
