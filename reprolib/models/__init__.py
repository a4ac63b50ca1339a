"""Models: one configurable small GPT, an MLP and a small CNN."""
from .cnn import SmallCNN
from .gpt import GPT, GPTConfig, apply_rope, rope_tables
from .mlp import MLP

__all__ = ["GPT", "GPTConfig", "MLP", "SmallCNN", "apply_rope", "rope_tables"]
