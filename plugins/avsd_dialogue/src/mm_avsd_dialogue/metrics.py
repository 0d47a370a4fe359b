"""Scoring generated answers against all their references with pycocoevalcap.

BLEU-1..4, METEOR, ROUGE-L and CIDEr, computed the way COCO captioning is (the DSTC7 AVSD
evaluation uses the same scorers). The PTB tokenizer and METEOR run Java; when Java is missing or
fails, METEOR is left out (and a simple lower-case tokenizer replaces PTB's) with a note saying so
instead of failing the run.
"""

from __future__ import annotations

import atexit
import logging
import re
import shutil
import threading
from collections.abc import Mapping, Sequence
from typing import Any

log = logging.getLogger(__name__)

METRIC_NAMES = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")


def _simple_tokenize(texts: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    # what PTBTokenizer does for plain English answers: lower case, punctuation dropped
    return {key: [" ".join(re.findall(r"[a-z0-9']+", t.lower())) for t in values] for key, values in texts.items()}


def _tokenize(texts: dict[str, list[str]], notes: list[str]) -> dict[str, list[str]]:
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    if shutil.which("java"):
        try:
            return PTBTokenizer().tokenize({k: [{"caption": t} for t in v] for k, v in texts.items()})
        except Exception as exc:  # Java present but failing: fall back, say so
            notes.append(f"PTB tokenizer failed ({type(exc).__name__}: {exc}); used a simple tokenizer")
    else:
        notes.append("java not found: used a simple tokenizer instead of PTB's")
    return _simple_tokenize(texts)


def score_answers(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]],
                  meteor: bool = True) -> tuple[dict[str, float], list[str]]:
    """Scores of ``predictions[id]`` against all of ``references[id]`` (every id of
    ``predictions``), and notes about anything left out. Scores are in [0, 1] (CIDEr in [0, 10]).
    ``meteor=False`` leaves METEOR out on purpose (it needs a JVM with large tables)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    notes: list[str] = []
    if not predictions:
        return {}, ["no predictions to score"]
    ids = sorted(predictions)
    missing = [i for i in ids if not references.get(i)]
    if missing:
        raise ValueError(f"no reference answers for {missing[:5]}")
    texts = {f"res_{i}": [predictions[i]] for i in ids} | {f"gts_{i}": list(references[i]) for i in ids}
    tokens = _tokenize(texts, notes)
    # an empty hypothesis breaks BLEU's and METEOR's bookkeeping; a lone space scores zero as well
    res = {i: [tokens[f"res_{i}"][0] or " "] for i in ids}
    gts = {i: tokens[f"gts_{i}"] for i in ids}

    scores: dict[str, float] = {}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    scores.update({f"Bleu_{n + 1}": float(b) for n, b in enumerate(bleu)})
    scores["METEOR"] = _meteor(gts, res, notes) if meteor else None
    scores["ROUGE_L"] = float(Rouge().compute_score(gts, res)[0])
    scores["CIDEr"] = float(Cider().compute_score(gts, res)[0])
    for note in notes:
        log.warning("dialogue metrics: %s", note)
    return {k: v for k, v in scores.items() if v is not None}, notes


_METEOR: Any = None
_METEOR_GUARD = threading.Lock()


def start_meteor() -> bool:
    """Start METEOR's Java process now, if Java is there; returns whether it runs.

    The process loads its paraphrase tables (tens of seconds on a busy CPU) on its own while the
    caller goes on, e.g. while a run trains, so the first evaluation does not wait for it. One
    process per Python process, reused by every evaluation and stopped at exit.
    """
    global _METEOR
    if not shutil.which("java"):
        return False
    with _METEOR_GUARD:
        if _METEOR is None:
            from pycocoevalcap.meteor.meteor import Meteor

            try:
                _METEOR = Meteor()
            except OSError:
                return False
            atexit.register(_close_meteor)
    return True


def _meteor(gts: dict, res: dict, notes: list[str]) -> float | None:
    if not shutil.which("java"):
        notes.append("METEOR skipped: java not found (install a Java runtime to get it)")
        return None
    try:
        if not start_meteor():
            raise OSError("java could not be started")
        with _METEOR_GUARD:
            return float(_METEOR.compute_score(gts, res)[0])
    except Exception as exc:
        notes.append(f"METEOR skipped: {type(exc).__name__}: {exc}")
        _close_meteor()  # a failed process is not reused
        return None


def _close_meteor() -> None:
    """Stop METEOR's Java process (pycocoevalcap would only do it in ``__del__``)."""
    global _METEOR
    scorer, _METEOR = _METEOR, None
    if scorer is None:
        return
    lock = getattr(scorer, "lock", None)
    if lock is not None and lock.locked():
        # compute_score keeps its lock when it fails midway, and __del__ would then wait forever
        lock.release()
    process = getattr(scorer, "meteor_p", None)
    if process is not None and process.poll() is None:
        process.kill()
        process.wait()
