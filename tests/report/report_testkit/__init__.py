"""A tiny captioning model for the report tests (registered for the coco plugin's captioning task)."""
