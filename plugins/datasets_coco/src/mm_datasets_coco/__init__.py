"""mm-plugin-datasets-coco: COCO caption and VQA builders, captioning and VQA tasks with standard metrics.

This package imports nothing heavy: the registry reads its package data through it.
"""

__version__ = "0.1.0"
