"""The offline tiny tokenizers of the Q-Former's text branch: ``tiny`` (characters) and ``tiny_words``
(the same 142 ids, whole words in the slots ``tiny`` never uses)."""

from __future__ import annotations

import string

from mm_blip2.text_tokenizer import build_text_tokenizer
from mm_core.generated_data import SHAPE_COLOURS, SHAPE_KINDS

CAPTION = "There are three yellow triangles against a gray backdrop, and a zebra!"


def test_tiny_words_keeps_the_142_ids_and_the_special_and_character_ids():
    chars, words = build_text_tokenizer("tiny"), build_text_tokenizer("tiny_words")
    assert len(chars) == len(words) == 142
    assert sorted(words.get_vocab().values()) == list(range(142))
    shared = {tok: i for tok, i in chars.get_vocab().items() if not tok.startswith("##") or tok[2:].isalnum()}
    assert all(words.get_vocab()[tok] == i for tok, i in shared.items())
    assert (words.cls_token_id, words.sep_token_id, words.pad_token_id, words.bos_token_id) == \
        (chars.cls_token_id, chars.sep_token_id, chars.pad_token_id, chars.bos_token_id)


def test_the_replaced_pieces_are_never_produced_by_tiny():
    # BERT's pre-tokenizer makes every punctuation mark a word of its own, so "##!" and the like are dead ids
    chars = build_text_tokenizer("tiny")
    text = string.punctuation.join(["ab", "cd", "e1"]) + " x.y,z!" + string.punctuation
    assert not any(tok[2:] in string.punctuation for tok in chars.tokenize(text) if tok.startswith("##"))


def test_tiny_words_reads_whole_words_and_spells_the_others():
    words = build_text_tokenizer("tiny_words")
    tokens = words.tokenize(CAPTION)
    assert tokens == ["there", "are", "three", "yellow", "triangle", "##s", "against", "a", "gray", "backdrop", ",",
                      "an", "##d", "a", "z", "##e", "##b", "##r", "##a", "!"]
    assert all(words.tokenize(w) == [w] for w in [*SHAPE_COLOURS, *SHAPE_KINDS])
    ids = words(CAPTION).input_ids
    assert words.decode(ids, skip_special_tokens=True) == CAPTION.lower()
    assert len(build_text_tokenizer("tiny").tokenize(CAPTION)) > 2 * len(tokens)
