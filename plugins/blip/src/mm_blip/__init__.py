"""mm-plugin-blip: BLIP (v1) models on transformers' BLIP classes, loading LAVIS' BLIP checkpoints.

This package imports nothing heavy: the registry reads its package data through it.
"""

__version__ = "0.1.0"
