"""Saved evaluation results, and how a report shows them without knowing the task.

The engine saves each evaluated split as ``result/<split>_epoch<epoch>.json`` under the run's
output folder: a JSON list with one record (an object) per sample, written by
:meth:`~mm_core.base.task.BaseTask.save_results`. A report (``mmrun report``) reads only these
files and knows no task or dataset: a task that wants its samples shown says everything in the
records, under these keys (all optional except the output; other keys are ignored):

=================  =====================================================================
an id              ``question_id``, ``image_id``, ``instance_id`` or ``sample_id`` (the
                   first present names the sample; :data:`ID_KEYS`)
the output         ``caption``, ``answer``, ``prediction``, ``output`` or ``text``
                   (:data:`OUTPUT_KEYS`)
``image``          the sample's image, relative to ``images_root`` (or absolute)
``images_root``    the absolute folder ``image`` is relative to, as the run found it
                   (``mmrun report --images-root DIR`` replaces it when the data moved)
``prompt``         the question or prompt the output answers
``references``     the ground-truth texts, a list of strings
``score``          a number that ranks the sample, higher is better ...
``score_name``     ... and the name of the metric it is (e.g. ``CIDEr``)
=================  =====================================================================

:func:`display_fields` builds these keys (:meth:`~mm_core.base.task.BaseTask.display_fields`
adds the evaluated split's ``images_root``). The engine calls ``after_evaluation`` before
``save_results`` with the same records, so a task whose metric scores each sample adds ``score``
and ``score_name`` to them there. This module imports nothing heavy: reports read it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: Keys of a result record that identify its sample, in order of preference.
ID_KEYS: tuple[str, ...] = ("question_id", "image_id", "instance_id", "sample_id")
#: Keys of a result record that may hold the model's output, in order of preference.
OUTPUT_KEYS: tuple[str, ...] = ("caption", "answer", "prediction", "output", "text")
#: The keys that say how a sample is shown (see the table above).
DISPLAY_KEYS: tuple[str, ...] = ("image", "images_root", "prompt", "references", "score", "score_name")


def display_fields(image: str | None = None, images_root: str | Path | None = None, prompt: str | None = None,
                   references: Sequence[str] | None = None, score: float | None = None,
                   score_name: str | None = None) -> dict[str, Any]:
    """The display keys of a result record, those given only (``images_root`` only with an ``image``)."""
    fields: dict[str, Any] = {"prompt": prompt, "score_name": score_name}
    if image is not None:
        fields["image"] = str(image)
        fields["images_root"] = str(images_root) if images_root is not None else None
    if references is not None:
        fields["references"] = [str(r) for r in references]
    if score is not None:
        fields["score"] = float(score)
    return {k: v for k, v in fields.items() if v is not None}
