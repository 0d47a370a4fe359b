"""mm-plugin-blip-processors: LAVIS' BLIP image and text processors, registered by name.

BLIP (mm-plugin-blip) and BLIP-2 (mm-plugin-blip2) configs name these processors; neither plugin
imports this package. Importing it imports nothing heavy: torchvision is imported when a processor is built.
"""

__version__ = "0.1.0"
