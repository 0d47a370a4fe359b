"""Caption metrics written again from their definitions, to check the ``coco_caption`` metric and
the tasks that use it against values that do not come from pycocoevalcap's code:

* BLEU-1..4 over the corpus (Papineni et al.; COCO's variant: n-gram counts clipped by the most
  any one reference has, the reference length closest to the candidate's, brevity penalty on the
  corpus lengths, the 1e-15 / 1e-9 guards the COCO scorer adds to each precision);
* ROUGE-L (Lin 2004): F-measure with beta 1.2 of the best LCS precision and recall over the
  references, averaged over samples;
* CIDEr-D (Vedantam et al. 2015, as the COCO scorer computes it): tf-idf n-gram vectors
  (n = 1..4, idf from the references of the corpus), clipped cosine, Gaussian length penalty
  (sigma 6, on bigram counts), times 10, averaged over references, n and then samples.

Inputs are already tokenised: lower-case words separated by single spaces (the tests pick
captions that PTB tokenisation leaves unchanged)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence

N = 4
SIGMA = 6.0
PUNCTUATION = {",", ".", "?", "!", ":", ";", "-", "--", "..."}


def tokenize(text: str) -> str:
    """Lower-case, and drop the punctuation tokens COCO's evaluation drops: for texts whose
    punctuation already stands apart (``"one person , a man"``), what PTB tokenisation gives."""
    return " ".join(w for w in text.lower().split() if w not in PUNCTUATION)


def ngrams(words: Sequence[str], n: int) -> Counter:
    return Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))


def bleu(candidates: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]]) -> list[float]:
    """Corpus BLEU-1..4."""
    correct, guess = [0] * N, [0] * N
    cand_len = ref_len = 0
    for key, candidate in candidates.items():
        words = candidate.split()
        refs = [r.split() for r in references[key]]
        cand_len += len(words)
        ref_len += min((abs(len(r) - len(words)), len(r)) for r in refs)[1]
        for n in range(1, N + 1):
            counts = ngrams(words, n)
            most = Counter()
            for r in refs:
                most |= ngrams(r, n)  # | keeps the larger count of each n-gram
            correct[n - 1] += sum(min(c, most[g]) for g, c in counts.items())
            guess[n - 1] += max(len(words) - n + 1, 0)
    scores, product = [], 1.0
    for n in range(N):
        product *= (correct[n] + 1e-15) / (guess[n] + 1e-9)
        scores.append(product ** (1 / (n + 1)))
    ratio = (cand_len + 1e-15) / (ref_len + 1e-9)
    penalty = math.exp(1 - 1 / ratio) if ratio < 1 else 1.0
    return [s * penalty for s in scores]


def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a, 1):
        for j, y in enumerate(b, 1):
            table[i][j] = table[i - 1][j - 1] + 1 if x == y else max(table[i - 1][j], table[i][j - 1])
    return table[-1][-1]


def rouge_l(candidates: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]]) -> float:
    beta2, total = 1.2**2, 0.0
    for key, candidate in candidates.items():
        words = candidate.split()
        if not words:  # an empty candidate scores 0
            continue
        lcs = [(_lcs(r.split(), words), len(r.split())) for r in references[key]]
        precision = max(m / len(words) for m, _ in lcs)
        recall = max(m / length for m, length in lcs)
        if precision and recall:
            total += (1 + beta2) * precision * recall / (recall + beta2 * precision)
    return total / len(candidates)


def cider_d(candidates: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]]) -> dict[Hashable, float]:
    """CIDEr-D of each sample (the corpus value is their mean)."""
    keys = list(candidates)
    doc_freq: Counter = Counter()
    for key in keys:
        doc_freq.update({g for r in references[key] for n in range(1, N + 1) for g in ngrams(r.split(), n)})
    log_docs = math.log(len(keys))

    def vectors(text: str):
        words = text.split()
        vecs = [{g: tf * (log_docs - math.log(max(1.0, doc_freq[g]))) for g, tf in ngrams(words, n).items()}
                for n in range(1, N + 1)]
        norms = [math.sqrt(sum(v * v for v in vec.values())) for vec in vecs]
        return vecs, norms, max(len(words) - 1, 0)  # the length is the number of bigrams

    scores = {}
    for key in keys:
        hyp, hyp_norm, hyp_len = vectors(candidates[key])
        total = 0.0
        for reference in references[key]:
            ref, ref_norm, ref_len = vectors(reference)
            penalty = math.exp(-((hyp_len - ref_len) ** 2) / (2 * SIGMA**2))
            for n in range(N):
                dot = sum(min(v, ref[n].get(g, 0.0)) * ref[n].get(g, 0.0) for g, v in hyp[n].items())
                if hyp_norm[n] and ref_norm[n]:
                    dot /= hyp_norm[n] * ref_norm[n]
                total += dot * penalty / N
        scores[key] = 10.0 * total / len(references[key])
    return scores


def corpus_cider_d(candidates: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]]) -> float:
    per_sample = cider_d(candidates, references)
    return sum(per_sample.values()) / len(per_sample)
