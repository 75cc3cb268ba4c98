"""wordformer: decoder-only transformer word predictors, built piece by piece, trained with Lightning.

The public API follows the chapter "HPT PyTorch Lightning Transformer: Introduction":
``scaled_dot_product`` (masked self-attention's core), the model (:class:`WordPredictor`, configured by
:class:`ModelConfig`), the Lightning module, the tokenizers, and ``generate`` / ``predict_next``.
"""

from .attention import MultiHeadSelfAttention, causal_mask, scaled_dot_product
from .checkpoint import LoadedModel, load_checkpoint
from .config import DataConfig, ModelConfig, TrainConfig
from .errors import WordformerError
from .generate import generate, generate_ids, predict_next
from .model import WordPredictor
from .tokenizers import BPETokenizer, CharTokenizer, Tokenizer, WordTokenizer, build_tokenizer
from .training import TrainResult, WordPredictorModule, train

__version__ = "0.1.0"

__all__ = [
    "BPETokenizer",
    "CharTokenizer",
    "DataConfig",
    "LoadedModel",
    "ModelConfig",
    "MultiHeadSelfAttention",
    "Tokenizer",
    "TrainConfig",
    "TrainResult",
    "WordPredictor",
    "WordPredictorModule",
    "WordTokenizer",
    "WordformerError",
    "build_tokenizer",
    "causal_mask",
    "generate",
    "generate_ids",
    "load_checkpoint",
    "predict_next",
    "scaled_dot_product",
    "train",
]
