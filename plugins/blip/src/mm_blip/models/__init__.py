"""BLIP (v1) architectures, one module per LAVIS family member."""
