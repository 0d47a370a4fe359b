"""mm-plugin-caption-metrics: the COCO caption metrics, registered as the metric ``coco_caption``.

This package imports nothing heavy: pycocoevalcap is imported when a score is computed.
"""

__version__ = "0.1.0"
