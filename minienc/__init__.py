"""minienc: a minimal, hand-written Transformer encoder that matches transformers bit for bit."""

from .attention import ATTENTION, get_attention, register_attention
from .checkpoint import CheckpointError
from .config import EncoderConfig
from .model import Encoder

__all__ = ["ATTENTION", "CheckpointError", "Encoder", "EncoderConfig", "get_attention", "register_attention"]
__version__ = "0.1.0"
