"""VQA accuracy with the answer normalisation of the official VQA evaluation.

An answer scores ``min(1, matches / 3)`` where ``matches`` counts the *other* annotators who gave
it, averaged over leaving out each of the (ten) annotators in turn. Before matching, answers
are normalised as the official evaluation does: punctuation removed or turned into spaces,
periods dropped unless part of a number, number words up to ten turned into digits, the
articles "a", "an", "the" removed, and common contractions written without their apostrophe
given one (``dont`` -> ``don't``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")
_COMMA_BETWEEN_DIGITS = re.compile(r"(\d)(,)(\d)")
_PERIOD_NOT_IN_NUMBER = re.compile(r"(?!<=\d)(\.)(?!\d)")
_NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
            "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = {"a", "an", "the"}


def _contractions() -> dict[str, str]:
    """Apostrophe-less spellings annotators typed -> the spelling the answers use."""
    words = (
        "ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've hasn't "
        "haven't he'd he'd've he's how'd how'll how's i'd i'd've i'm i've isn't it'd it'd've it'll let's "
        "ma'am mightn't mightn't've might've mustn't must've needn't not've o'clock oughtn't 'ow's'at "
        "shan't she'd she'd've she'll she's should've shouldn't shouldn't've somebody'd somebody'd've "
        "somebody'll somebody's someone'd someone'd've someone'll someone's something'd something'd've "
        "something'll that's there'd there'd've there're there's they'd they'd've they'll they're they've "
        "twas wasn't we'd we'd've we'll we're we've weren't what'll what're what's what've when's where'd "
        "where's where've who'd who'd've who'll who're who's who've why'll why're why's won't would've "
        "wouldn't wouldn't've y'all y'all'll y'all'd've you'd you'd've you'll you're you've"
    ).split()
    table = {w.replace("'", ""): w for w in words}
    # forms with the apostrophe in one place only (e.g. "he'dve") are also seen in the answers
    for w in words:
        if w.count("'") == 2:
            first, second = w.split("'", 1)[0], w.rsplit("'", 1)[1]
            middle = w.split("'")[1]
            table[f"{first}'{middle}{second}"] = w
            table[f"{first}{middle}'{second}"] = w
    return table


_CONTRACTIONS = _contractions()


def normalize_punctuation(text: str) -> str:
    """Strip punctuation where it touches a space (or a digit group comma), else make it a space."""
    out = text
    for p in _PUNCTUATION:
        if (p + " " in text or " " + p in text) or _COMMA_BETWEEN_DIGITS.search(text) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_NOT_IN_NUMBER.sub("", out)


def normalize_digits_articles(text: str) -> str:
    """Lower-case; number words to digits; drop articles; restore contractions."""
    words = []
    for word in text.lower().split():
        word = _NUMBERS.get(word, word)
        if word not in _ARTICLES:
            words.append(_CONTRACTIONS.get(word, word))
    return " ".join(words)


def normalize_answer(answer: str) -> str:
    """The official normalisation of one answer."""
    answer = answer.replace("\n", " ").replace("\t", " ").strip()
    return normalize_digits_articles(normalize_punctuation(answer))


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """Accuracy of ``prediction`` against the human ``answers`` of one question, in [0, 1]."""
    if not answers:
        raise ValueError("VQA accuracy needs at least one reference answer")
    pred = normalize_answer(prediction)
    refs = [normalize_answer(a) for a in answers]
    scores = []
    for left_out in range(len(refs)):
        matches = sum(1 for j, ref in enumerate(refs) if j != left_out and ref == pred)
        scores.append(min(1.0, matches / 3.0))
    return sum(scores) / len(scores)
