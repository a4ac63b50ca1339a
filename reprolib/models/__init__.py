"""Models: one configurable small GPT and an MLP."""
from .gpt import GPT, GPTConfig, apply_rope, rope_tables
from .mlp import MLP

__all__ = ["GPT", "GPTConfig", "MLP", "apply_rope", "rope_tables"]
