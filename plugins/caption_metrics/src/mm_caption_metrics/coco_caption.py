"""The metric ``coco_caption``: BLEU-1..4, METEOR, ROUGE-L, CIDEr (and SPICE when its Stanford
models are installed) with pycocoevalcap, computed from references given in memory.

The candidates and references are tokenised with pycocoevalcap's PTBTokenizer (Java), as the
COCO caption evaluation does. A metric whose Java program cannot run is left out with a note
in :attr:`~mm_core.base.metric.MetricScores.notes` instead of failing the evaluation; without
Java a Python approximation of the PTB tokenisation is used.
"""

from __future__ import annotations

import atexit
import logging
import re
import shutil
import threading
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mm_core.base.metric import MetricScores

log = logging.getLogger(__name__)

# Same punctuation pycocoevalcap's PTBTokenizer drops after tokenising.
_PUNCT_TOKENS = {"''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"}


class CocoCaptionMetric:
    """The registered metric: call it to score, :meth:`warm_up` to start METEOR early."""

    def __call__(self, predictions: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]],
                 spice: bool | None = None, meteor: bool = True) -> MetricScores:
        """Score one prediction per sample id against that sample's references.

        Corpus values (LAVIS' names: ``Bleu_1``..``Bleu_4``, ``METEOR``, ``ROUGE_L``, ``CIDEr``,
        ``SPICE``) in ``metrics``; CIDEr of each sample in ``per_sample["CIDEr"]``, keyed by the
        ids of ``predictions``. ``spice``: ``True`` requires it, ``False`` skips it, ``None``
        computes it when available. ``meteor=False`` skips METEOR (its Java scorer takes ~10 s to
        load its paraphrase table, once per process).
        """
        missing = [k for k in predictions if not references.get(k)]
        if missing:
            raise ValueError(f"no references for sample ids {missing[:5]}")
        ids = list(predictions)
        scores = MetricScores()
        gts, res = _tokenize({i: list(references[i]) for i in ids}, {i: [predictions[i]] for i in ids}, scores.notes)
        # an empty candidate breaks BLEU's and METEOR's bookkeeping; a lone space scores zero as well
        res = {i: [c if c.strip() else " " for c in v] for i, v in res.items()}
        _ngram_metrics(gts, res, ids, scores)
        if meteor:
            value = _meteor(gts, res, scores.notes)
            if value is not None:
                scores.metrics["METEOR"] = value
        _spice_if_wanted(gts, res, spice, scores)
        return scores

    def warm_up(self) -> bool:
        """Start METEOR's Java scorer now (see :func:`start_meteor`); whether it runs."""
        return start_meteor()


#: The target registered as ``coco_caption``.
score = CocoCaptionMetric()


def _ngram_metrics(gts: dict, res: dict, ids: list, scores: MetricScores) -> None:
    """BLEU-1..4, ROUGE-L and CIDEr-D (corpus and per sample) into ``scores``."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    scores.metrics.update({f"Bleu_{n + 1}": float(b) for n, b in enumerate(bleu)})
    scores.metrics["ROUGE_L"] = float(Rouge().compute_score(gts, res)[0])
    cider, per_sample = Cider().compute_score(gts, res)
    scores.metrics["CIDEr"] = float(cider)
    scores.per_sample["CIDEr"] = {i: float(s) for i, s in zip(ids, per_sample)}


def _spice_if_wanted(gts: dict, res: dict, spice: bool | None, scores: MetricScores) -> None:
    if spice or (spice is None and spice_available()):
        value = _spice(gts, res, scores.notes, required=bool(spice))
        if value is not None:
            scores.metrics["SPICE"] = value
    elif spice is None:
        scores.notes.append("SPICE skipped: it needs Java and the Stanford CoreNLP 3.6.0 jars in pycocoevalcap/spice/lib")


def spice_available() -> bool:
    """Whether SPICE can run offline: Java plus the Stanford CoreNLP jars it needs."""
    try:
        import pycocoevalcap.spice as spice_pkg
    except ImportError:
        return False
    lib = Path(spice_pkg.__file__).parent / "lib"
    return shutil.which("java") is not None and (lib / "stanford-corenlp-3.6.0-models.jar").is_file()


def _tokenize(gts: dict, res: dict, notes: list[str]) -> tuple[dict, dict]:
    """Tokenise references and candidates in one Java call (each call starts a JVM)."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    if shutil.which("java") is None:
        notes.append("PTBTokenizer not run: java not found; used a Python approximation of its tokenisation")
        return _simple_tokenized(gts, res)
    both = {("ref", k): [{"caption": c} for c in v] for k, v in gts.items()}
    both.update({("cand", k): [{"caption": c} for c in v] for k, v in res.items()})
    try:
        tokenized = PTBTokenizer().tokenize(both)
        if set(tokenized) != set(both) or any(len(tokenized[k]) != len(both[k]) for k in both):
            raise RuntimeError("the tokenizer returned fewer lines than it was given")
        return ({k: tokenized[("ref", k)] for k in gts}, {k: tokenized[("cand", k)] for k in res})
    except Exception as exc:  # no Java, unwritable package folder, ...
        notes.append(f"PTBTokenizer (Java) failed ({exc}); used a Python approximation of its tokenisation")
        log.warning(notes[-1])
        return _simple_tokenized(gts, res)


def _simple_tokenized(gts: dict, res: dict) -> tuple[dict, dict]:
    return ({k: [simple_tokenize(c) for c in v] for k, v in gts.items()},
            {k: [simple_tokenize(c) for c in v] for k, v in res.items()})


def simple_tokenize(text: str) -> str:
    """Lower-case, split off punctuation and drop it: a Python approximation of what PTBTokenizer +
    pycocoevalcap do, used without Java."""
    tokens = re.findall(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]", text.lower().replace("\n", " "))
    return " ".join(t for t in tokens if t not in _PUNCT_TOKENS)


_meteor_scorer: Any = None
_meteor_lock = threading.Lock()


def start_meteor() -> bool:
    """Start METEOR's Java scorer now if Java is there; returns whether it runs.

    It loads its paraphrase tables (tens of seconds on a busy CPU) while the caller goes on, e.g.
    while a run trains, so the first evaluation does not wait. One scorer per process, reused by
    every evaluation and stopped at exit.
    """
    global _meteor_scorer
    if shutil.which("java") is None:
        return False
    with _meteor_lock:
        if _meteor_scorer is None:
            from pycocoevalcap.meteor.meteor import Meteor

            try:
                _meteor_scorer = Meteor()
            except OSError:
                return False
            atexit.register(_close_meteor)
    return True


def _meteor(gts: dict, res: dict, notes: list[str]) -> float | None:
    """METEOR from the process' one Java scorer (see :func:`start_meteor`)."""
    try:
        if shutil.which("java") is None:
            raise FileNotFoundError("java not found (install a Java runtime to get it)")
        if not start_meteor():
            raise OSError("java could not be started")
        with _meteor_lock:
            return float(_meteor_scorer.compute_score(gts, res)[0])
    except Exception as exc:  # Java missing or out of memory: report, don't crash the run
        with _meteor_lock:
            _close_meteor()  # a failed process is not reused
        notes.append(f"METEOR left out: {type(exc).__name__}: {exc}")
        log.warning(notes[-1])
        return None


def _close_meteor() -> None:
    global _meteor_scorer
    scorer, _meteor_scorer = _meteor_scorer, None
    process = getattr(scorer, "meteor_p", None)
    if process is None:
        return
    lock = getattr(scorer, "lock", None)
    if lock is not None and lock.locked():
        # a failed compute_score leaves pycocoevalcap's lock held; its __del__ would block on it
        lock.release()
    try:
        process.stdin.close()
        process.kill()
        process.wait(timeout=5)
    except Exception:  # already gone
        pass


def _spice(gts: dict, res: dict, notes: list[str], required: bool) -> float | None:
    try:
        from pycocoevalcap.spice.spice import Spice

        if not spice_available():
            raise RuntimeError("Java or the Stanford CoreNLP 3.6.0 jars are missing")
        return float(Spice().compute_score(gts, res)[0])
    except Exception as exc:
        if required:
            from mm_core.errors import ConfigError

            raise ConfigError(f"SPICE was requested but cannot run: {exc}",
                              hint="install Java and run pycocoevalcap's get_stanford_models, or set run.spice: false") from exc
        notes.append(f"SPICE left out: {exc}")
        return None
