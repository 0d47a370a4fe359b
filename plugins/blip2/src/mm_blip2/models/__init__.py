"""BLIP-2 model classes (imported only when a config asks for them)."""
