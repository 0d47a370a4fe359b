"""``image_text_pretrain``: train on the model's language-modelling loss (LAVIS' name)."""

from __future__ import annotations

from mm_core.base.task import BaseTask


class ImageTextPretrainTask(BaseTask):
    """Training loss from ``model(samples)["loss"]``; evaluating a split (optional, e.g.
    ``valid_splits: [val]``) reports its mean loss, with ``agg_metrics = -loss`` so the best
    checkpoint is the one with the lowest validation loss.

    MiniGPT4-Qwen trains this way on instruction data; the model formats the conversations.
    """
