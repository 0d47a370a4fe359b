"""mm-plugin-qwen-llm: The Qwen LLM backend, ChatML conversations, LoRA, chat and instruction datasets.

This package imports nothing heavy: the registry reads its package data through it.
"""

__version__ = "0.1.0"
