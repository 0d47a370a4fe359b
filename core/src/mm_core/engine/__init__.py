"""The training and evaluation engine: what ``mmrun --config run.yaml`` does after the config
is merged, one concept per module (``run``, ``settings``, ``runner``, ``data``, ``optim``,
``schedulers``, ``precision``, ``distributed``, ``checkpoint``, ``evaluation``, ``metrics``,
``guards``; docs/architecture.md). Importing this package imports nothing heavy."""
