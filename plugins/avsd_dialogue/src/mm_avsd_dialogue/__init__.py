"""mm-plugin-avsd-dialogue: AVSD video-grounded dialogue: builder, processors, GPT-2 dialogue model and task.

This package imports nothing heavy: the registry reads its package data through it.
"""

__version__ = "0.1.0"
