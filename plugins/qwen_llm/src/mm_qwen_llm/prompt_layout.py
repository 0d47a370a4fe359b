"""Conversations -> ids and labels in the layouts of LAVIS' BLIP-2 family (``hf_causal_lm``, ``hf_seq2seq``).

Every image mark of the user turns becomes ``num_image_tokens`` placeholders, all of them first,
before the text and its BOS (Hugging Face ``Blip2ForConditionalGeneration``'s and LAVIS' order);
a typed image token is removed from the text. Turns are pieces of text, user ones unsupervised::

    plain (BLIP-2 OPT):  [img]*n tok(prompt + " " + answer + answer_suffix)
                         labels -100 over the first len(tok(prompt)) ids (LAVIS' prompt_length)
    vicuna (InstructBLIP): [img]*n tok(prompt) tok(answer, no BOS) [eos]
                         labels on the answer and its eos (LAVIS' concat_text_input_output)
    seq2seq (T5):        encoder [img]*n tok(prompt) (T5 appends </s>); labels tok(answer) (with </s>)

Several turns are pieces in order: ``plain`` joins them into one text (a space between pieces
that do not already meet at whitespace), ``vicuna`` tokenises them one by one (only the first
with the BOS), ``seq2seq`` puts every piece but the final answer into the encoder. Truncation to
``max_len`` cuts from the end and never keeps part of an image, except in ``vicuna``, where, as in
LAVIS, the prompt is cut from the left (BOS kept) to ``max_len`` after the images and the answer
follows it; ``max_answer_len`` caps each answer's ids (LAVIS' ``max_output_txt_len``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mm_core.base.llm import IGNORE_INDEX, IMAGE_MARK, Conversation
from mm_core.errors import ConfigError, DataError
from mm_qwen_llm.conversation import ASSISTANT, USER, normalise_conversation

PROMPT_FORMATS = ("plain", "vicuna")


@dataclass
class Pieces:
    """A conversation as the number of images and its texts, each ``(text, is_answer)``."""

    images: int
    texts: list[tuple[str, bool]]


def conversation_pieces(conversation: Conversation, image_token: str) -> Pieces:
    """The images (one per mark of a user turn) and the turns' texts, marks and typed image tokens removed."""
    turns = normalise_conversation(conversation)
    if turns and turns[0][0] == ASSISTANT:
        turns = turns[1:]
    images, texts = 0, []
    for role, text in turns:
        if role == USER:
            images += text.count(IMAGE_MARK)
            text = " ".join(part.strip() for part in text.split(IMAGE_MARK) if part.strip())
        texts.append((text.replace(image_token, ""), role == ASSISTANT))
    return Pieces(images, texts)


def join_text(left: str, right: str) -> str:
    """``left`` and ``right`` with one space between them unless they meet at whitespace."""
    if left and right and not left[-1].isspace() and not right[0].isspace():
        return f"{left} {right}"
    return left + right


class PromptLayout:
    """Encodes conversations for one tokenizer in one layout (``plain``, ``vicuna`` or ``seq2seq``)."""

    def __init__(self, tokenizer: Any, layout: str, image_token: str, image_token_id: int,
                 answer_suffix: str = "", max_answer_len: int | None = None) -> None:
        if layout not in (*PROMPT_FORMATS, "seq2seq"):
            raise ConfigError(f"model.llm.prompt_format '{layout}' is not one of {', '.join(PROMPT_FORMATS)}")
        self.tokenizer, self.layout = tokenizer, layout
        self.image_token, self.image_token_id = image_token, int(image_token_id)
        self.answer_suffix, self.max_answer_len = answer_suffix, max_answer_len

    def ids(self, text: str, special: bool = True) -> list[int]:
        """Ids of ``text``; typed special-token strings stay text (never control tokens)."""
        return list(self.tokenizer(text, add_special_tokens=special, split_special_tokens=True)["input_ids"])

    # -- training samples -------------------------------------------------------------------
    def encode(self, conversation: Conversation, num_image_tokens: int, max_len: int | None = None) -> dict[str, list[int]]:
        """``input_ids`` and ``labels`` (for ``seq2seq`` the decoder's target) of a training conversation."""
        pieces = conversation_pieces(conversation, self.image_token)
        head = [self.image_token_id] * (pieces.images * num_image_tokens)
        if self.layout == "vicuna":  # LAVIS: the prompt cut from the left to max_len, the answer after it
            budget = None if max_len is None else max(max_len - len(head), 1)
            ids, labels = self._vicuna(pieces, budget)
            return {"input_ids": head + ids, "labels": [IGNORE_INDEX] * len(head) + labels}
        if self.layout == "seq2seq":
            ids, labels = self._seq2seq(pieces)
        else:
            ids, labels = self._plain(pieces)
            labels = [IGNORE_INDEX] * len(head) + labels
        ids = head + ids
        if max_len is not None and len(ids) > max_len:
            cut = max_len if max_len >= len(head) else max_len - max_len % max(num_image_tokens, 1)
            ids = ids[:cut]
            labels = labels if self.layout == "seq2seq" else labels[:cut]
        return {"input_ids": ids, "labels": labels}

    def _plain(self, pieces: Pieces) -> tuple[list[int], list[int]]:
        text, spans = "", []
        for piece, answer in pieces.texts:
            before = text
            text = join_text(text, piece + self.answer_suffix if answer else piece)
            if answer:
                # as LAVIS: an empty prompt masks nothing (the BOS label is learnt from the last image position)
                spans.append((len(self.ids(before)) if before else 0, text))
        ids = self.ids(text)
        labels = [IGNORE_INDEX] * len(ids)
        for start, upto in spans:
            end = len(self.ids(upto))
            if self.max_answer_len is not None:
                end = min(end, start + self.max_answer_len)
            labels[start:end] = ids[start:end]
        return ids, labels

    def _vicuna(self, pieces: Pieces, prompt_budget: int | None = None) -> tuple[list[int], list[int]]:
        """InstructBLIP's layout; with ``prompt_budget`` the prompt ids (BOS kept) are cut from the
        left to that many, as LAVIS' tokenizer does with ``truncation_side='left'``."""
        ids: list[int] = []
        labels: list[int] = []
        for piece, answer in pieces.texts:
            if answer:
                part = [*self.ids(piece, special=False), self.tokenizer.eos_token_id][:self.max_answer_len]
                ids, labels = ids + part, labels + part
            else:
                part = self.ids(piece, special=not ids)
                if prompt_budget is not None:  # the prompt ids so far count against the budget
                    part = self._cut_left(part, max(prompt_budget - labels.count(IGNORE_INDEX), 0))
                ids, labels = ids + part, labels + [IGNORE_INDEX] * len(part)
        return ids, labels

    def _cut_left(self, ids: list[int], keep: int) -> list[int]:
        """The last ``keep`` ids, a leading BOS kept (a tokenizer's left truncation keeps special tokens)."""
        if len(ids) <= keep:
            return ids
        bos = ids[:1] if keep and ids[:1] == [self.tokenizer.bos_token_id] else []
        return bos + ids[len(ids) - keep + len(bos):]

    def _seq2seq(self, pieces: Pieces) -> tuple[list[int], list[int]]:
        texts = list(pieces.texts)
        target = texts.pop()[0] if texts and texts[-1][1] else None
        prompt = ""
        for piece, _ in texts:
            prompt = join_text(prompt, piece)
        labels = self.ids(target)[:self.max_answer_len] if target is not None else []
        return self.ids(prompt), labels

    # -- prompts ----------------------------------------------------------------------------
    def encode_prompt(self, conversation: Conversation, num_image_tokens: int) -> list[int]:
        """Ids of a conversation ending with a user turn, ready for generation (the prefix
        training sees; for ``seq2seq`` the encoder's input)."""
        pieces = conversation_pieces(conversation, self.image_token)
        if not pieces.texts or pieces.texts[-1][1]:
            raise DataError("a prompt must end with a user turn", hint="append the user's question")
        head = [self.image_token_id] * (pieces.images * num_image_tokens)
        if self.layout == "vicuna":
            return head + self._vicuna(pieces)[0]
        if self.layout == "seq2seq":
            return head + self._seq2seq(pieces)[0]
        text = ""
        for piece, answer in pieces.texts:
            text = join_text(text, piece + self.answer_suffix if answer else piece)
        return head + self.ids(text)
