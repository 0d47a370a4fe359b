"""A tiny character-level chat model that the serve tests load as a plugin (no torch here)."""
