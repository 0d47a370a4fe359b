"""The training and evaluation engine: what ``mmrun --config run.yaml`` does after the config
is merged.

Modules, one concept each (importing this package imports nothing heavy):

* :mod:`~mm_core.engine.run` — :func:`run_config`, the entry point (distributed setup, seed,
  build task/datasets/model/runner, train or evaluate).
* :mod:`~mm_core.engine.settings` — :class:`RunSettings`, the typed view of ``run.*``.
* :mod:`~mm_core.engine.runner` — :class:`Runner` (the shared loop), ``EpochRunner``
  (``runner_base``) and ``IterRunner`` (``runner_iter``).
* :mod:`~mm_core.engine.data` — train stream (data order a pure function of seed and epoch),
  evaluation loaders, moving samples to the device.
* :mod:`~mm_core.engine.optim` — AdamW parameter groups.
* :mod:`~mm_core.engine.schedulers` — learning-rate schedules (``run.lr_sched``).
* :mod:`~mm_core.engine.precision` — autocast and gradient scaling.
* :mod:`~mm_core.engine.distributed` — process group from the torchrun environment.
* :mod:`~mm_core.engine.checkpoint` — atomic checkpoint directories, ``latest``/``best``.
* :mod:`~mm_core.engine.evaluation` — evaluating a split and gathering results to rank 0.
* :mod:`~mm_core.engine.metrics` — ``metrics.jsonl``, progress bar, TensorBoard.
* :mod:`~mm_core.engine.guards` — non-finite loss, SIGINT/SIGTERM, disk preflight.
"""
