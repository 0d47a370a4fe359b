"""mm-plugin-tensorboard: TensorBoard scalars of a run through mm's lifecycle hooks."""

__version__ = "0.1.0"
