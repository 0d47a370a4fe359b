"""``mmrun predict``: offline batch inference over a folder, a glob, a records file or a dataset
split, for any model with ``generate`` / ``predict_answers`` / ``chat`` (docs/serving.md,
"Batch inference").

Modules: :mod:`~mm_serve.predict.inputs` (what to predict: records and their ids),
:mod:`~mm_serve.predict.loading` (decoding in DataLoader workers, unreadable images kept as errors),
:mod:`~mm_serve.predict.calls` (which model method answers a record, with which settings),
:mod:`~mm_serve.predict.output` (the JSONL file: resume, per-rank parts, the merge in input order),
:mod:`~mm_serve.predict.cli` (the command). Importing this package imports no torch.
"""
