"""mm-plugin-deepspeed: the ``deepspeed_runner`` and DeepSpeed checkpoint consolidation.

This package imports nothing heavy: the registry reads its hooks through it, and DeepSpeed is
imported only when a run asks for the runner.
"""

__version__ = "0.1.0"
