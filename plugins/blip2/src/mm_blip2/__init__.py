"""mm-plugin-blip2: BLIP-2 vision tower and Q-Former (timm + transformers), BLIP processors, LAVIS checkpoints, BLIP-2 -> LLM composition.

This package imports nothing heavy: the registry reads its package data through it.
"""

__version__ = "0.1.0"
