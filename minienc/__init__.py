"""minienc: a minimal, hand-written Transformer encoder that matches transformers bit for bit."""

from .attention import ATTENTION, get_attention, register_attention
from .checkpoint import CheckpointError
from .config import EncoderConfig
from .corpus import read_vectors
from .model import Encoder
from .pooling import POOLERS, l2_normalize
from .sentence import SentenceEncoder, SentenceTransformer

__all__ = [
    "ATTENTION",
    "POOLERS",
    "CheckpointError",
    "Encoder",
    "EncoderConfig",
    "SentenceEncoder",
    "SentenceTransformer",
    "get_attention",
    "l2_normalize",
    "read_vectors",
    "register_attention",
]
__version__ = "0.1.0"
