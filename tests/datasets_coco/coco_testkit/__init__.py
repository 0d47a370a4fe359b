"""A test plugin for the datasets_coco tests: the ``shape_captioner`` model."""
