"""mm-plugin-blip2: BLIP-2 vision tower and Q-Former (timm + transformers), LAVIS checkpoints, BLIP-2 -> LLM compositions (blip2_llm, minigpt4qwen).

This package imports nothing heavy: the registry reads its package data through it.
"""

__version__ = "0.1.0"
