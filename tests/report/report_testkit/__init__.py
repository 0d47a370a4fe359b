"""The report tests' plugin: a tiny captioning model, and a dataset and a task that are not COCO's."""
