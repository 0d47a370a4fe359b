"""ChatML conversations -> token ids and labels, as MiniGPT4-Qwen lays them out (and batches).

Layout of one training sample (``nl`` = ids of ``"\\n"``, one token for Qwen tokenizers)::

    system:    [im_start] ids("system") nl ids(system_message) [im_end] nl
               labels: [im_start] -100 ... -100 [im_end] nl
    user:      [im_start] ids("user") nl ids(content) [im_end] nl
               labels: [im_start] -100 ... -100 [im_end] nl
    assistant: [im_start] ids("assistant") nl ids(content) [im_end] nl
               labels: [im_start] -100 (role header and its nl) content [im_end] nl

(Labels are not shifted: the causal-LM loss compares position ``t``'s logits with the label
at ``t + 1``, so the ``im_start`` label teaches the model to open the next turn.)

Differences from the original, on purpose:

* a conversation starting with an assistant turn drops it (as the original), and every
  :data:`~mm_core.base.llm.IMAGE_MARK` in a user turn becomes ``num_image_tokens`` ids of the
  placeholder token, spliced as ids rather than as text;
* text is encoded with special-token parsing off, so a literal ``<|image_pad|>`` (or
  ``<|im_end|>``) typed by a user becomes ordinary characters and can never be taken for an
  image position;
* truncation to ``max_len`` never splits an image's placeholders: the cut moves back to the
  start of that image, whose embedding is then not used (``num_images`` says how many are);
* :meth:`ChatMLEncoder.collate` pads to the longest sample of the batch, not to ``max_len``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from mm_core.base.llm import IGNORE_INDEX, IMAGE_MARK, Conversation
from mm_core.errors import DataError

log = logging.getLogger(__name__)

DEFAULT_SYSTEM_MESSAGE = "You are a helpful assistant."

USER, ASSISTANT = "user", "assistant"
#: Speaker names accepted in ``from`` (LLaVA writes human/gpt).
ROLE_ALIASES = {"user": USER, "human": USER, "assistant": ASSISTANT, "gpt": ASSISTANT}


def encode_text(tokenizer: Any, text: str) -> list[int]:
    """Ids of plain ``text`` with special-token strings taken literally (never as control tokens).

    Fast (``tokenizers``) tokenizers do this with ``split_special_tokens``; Qwen-1's tiktoken
    tokenizer (remote code) with an empty ``allowed_special``.
    """
    if not text:
        return []
    if getattr(tokenizer, "is_fast", False):
        return list(tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])
    return list(tokenizer(text, add_special_tokens=False, allowed_special=set(), disallowed_special=())["input_ids"])


def special_token_id(tokenizer: Any, token: str) -> int | None:
    """Id of ``token`` when it is one token of ``tokenizer``'s vocabulary, else ``None``."""
    try:
        ids = tokenizer.convert_tokens_to_ids([token])
    except (KeyError, ValueError):
        return None
    found = ids[0] if ids else None
    unk = getattr(tokenizer, "unk_token_id", None)
    if found is None or (unk is not None and found == unk and token != getattr(tokenizer, "unk_token", None)):
        return None
    return int(found)


@dataclass
class Encoded:
    """One encoded sample: ``input_ids``, ``labels`` and how many images kept their placeholders."""

    input_ids: list[int]
    labels: list[int]
    num_images: int

    def as_dict(self) -> dict[str, list[int]]:
        return {"input_ids": self.input_ids, "labels": self.labels, "num_images": [self.num_images]}


class ChatMLEncoder:
    """Encodes conversations for a Qwen-style tokenizer with ChatML special tokens.

    ``image_token_id`` is the placeholder an image's embeddings overwrite; ``pad_token_id``
    pads batches (Qwen pads with ``<|endoftext|>``).
    """

    def __init__(
        self,
        tokenizer: Any,
        image_token_id: int,
        pad_token_id: int,
        system_message: str = DEFAULT_SYSTEM_MESSAGE,
    ) -> None:
        self.tokenizer = tokenizer
        self.image_token_id = int(image_token_id)
        self.pad_token_id = int(pad_token_id)
        self.system_message = system_message
        self.im_start = self._required_token("<|im_start|>")
        self.im_end = self._required_token("<|im_end|>")
        self.nl = encode_text(tokenizer, "\n")
        self.role_ids = {role: [self.im_start, *encode_text(tokenizer, role)] for role in (USER, ASSISTANT)}

    def _required_token(self, token: str) -> int:
        found = special_token_id(self.tokenizer, token)
        if found is None:
            found = getattr(self.tokenizer, {"<|im_start|>": "im_start_id", "<|im_end|>": "im_end_id"}[token], None)
        if found is None:
            raise DataError(
                f"the tokenizer has no '{token}' token, so it cannot format ChatML conversations",
                hint="use a Qwen chat tokenizer (or one trained with the ChatML special tokens)",
            )
        return int(found)

    # -- pieces ---------------------------------------------------------------------------
    def system_block(self) -> tuple[list[int], list[int]]:
        ids = [self.im_start, *encode_text(self.tokenizer, "system"), *self.nl,
               *encode_text(self.tokenizer, self.system_message), self.im_end, *self.nl]
        return ids, self._closed_labels(len(ids))

    def _closed_labels(self, length: int) -> list[int]:
        """``[im_start] -100 ... -100 [im_end] nl`` for an unsupervised block of ``length``."""
        return [self.im_start, *[IGNORE_INDEX] * (length - 2 - len(self.nl)), self.im_end, *self.nl]

    def content_ids(self, text: str, num_image_tokens: int, images: bool) -> tuple[list[int], list[tuple[int, int]]]:
        """Ids of a turn's content and the (start, end) span of each image's placeholders."""
        pieces = text.split(IMAGE_MARK) if images else [text]
        ids: list[int] = []
        spans: list[tuple[int, int]] = []
        for index, piece in enumerate(pieces):
            if index > 0:
                spans.append((len(ids), len(ids) + num_image_tokens))
                ids.extend([self.image_token_id] * num_image_tokens)
            ids.extend(encode_text(self.tokenizer, piece))
        return ids, spans

    def turn(self, role: str, text: str, num_image_tokens: int) -> tuple[list[int], list[int], list[tuple[int, int]]]:
        """Ids, labels and image spans (relative to the turn) of one turn."""
        header = self.role_ids[role]
        content, spans = self.content_ids(text, num_image_tokens, images=role == USER)
        offset = len(header) + len(self.nl)
        ids = [*header, *self.nl, *content, self.im_end, *self.nl]
        if role == USER:
            labels = self._closed_labels(len(ids))
        else:
            labels = [self.im_start, *[IGNORE_INDEX] * (offset - 1), *content, self.im_end, *self.nl]
        return ids, labels, [(s + offset, e + offset) for s, e in spans]

    # -- whole samples --------------------------------------------------------------------
    def encode(
        self,
        conversation: Conversation,
        num_image_tokens: int,
        max_len: int | None = None,
        sample: str | None = None,
    ) -> Encoded:
        """Ids and labels of a training conversation (see the module docstring)."""
        turns = normalise_conversation(conversation, sample)
        if turns and turns[0][0] == ASSISTANT:
            turns = turns[1:]
        ids, labels = self.system_block()
        spans: list[tuple[int, int]] = []
        for role, text in turns:
            t_ids, t_labels, t_spans = self.turn(role, text, num_image_tokens)
            spans.extend((s + len(ids), e + len(ids)) for s, e in t_spans)
            ids += t_ids
            labels += t_labels
        if max_len is not None and len(ids) > max_len:
            return self._truncate(ids, labels, spans, max_len, sample)
        return Encoded(ids, labels, len(spans))

    def _truncate(self, ids: list[int], labels: list[int], spans: list[tuple[int, int]], max_len: int,
                  sample: str | None) -> Encoded:
        cut = max_len
        for start, end in spans:
            if start < cut < end:
                cut = start  # never keep part of an image
        if any(label != IGNORE_INDEX for label in labels) and all(label == IGNORE_INDEX for label in labels[:cut]):
            _warn_answer_cut(sample, len(ids), max_len)
        return Encoded(ids[:cut], labels[:cut], sum(1 for _, end in spans if end <= cut))

    def encode_prompt(self, conversation: Conversation, num_image_tokens: int, sample: str | None = None) -> list[int]:
        """Ids of a conversation ending with a user turn plus the assistant header (for generation)."""
        turns = normalise_conversation(conversation, sample)
        if not turns or turns[-1][0] != USER:
            raise DataError(f"{_name(sample)}: a prompt must end with a user turn", hint="append the user's question")
        if turns[0][0] == ASSISTANT:
            turns = turns[1:]
        ids, _ = self.system_block()
        for role, text in turns:
            ids += self.turn(role, text, num_image_tokens)[0]
        return [*ids, *self.role_ids[ASSISTANT], *self.nl]

    def collate(
        self,
        encoded: Sequence[dict[str, list[int]] | Sequence[int]],
        padding_side: str | None = None,
        pad_to: int | None = None,
    ) -> dict[str, torch.Tensor]:
        """Pad to the longest sample (or to ``pad_to``): ``input_ids``, ``attention_mask``, ``labels``.

        Items are encoded samples or bare id lists (prompts). ``padding_side`` defaults to
        right for training samples (with labels) and left for prompts, which generation continues.
        """
        encoded = [e if isinstance(e, dict) else {"input_ids": list(e)} for e in encoded]
        with_labels = all("labels" in e for e in encoded)
        side = padding_side or ("right" if with_labels else "left")
        width = max(len(e["input_ids"]) for e in encoded)
        if pad_to is not None:
            width = max(width, pad_to)
        batch: dict[str, list[list[int]]] = {"input_ids": [], "attention_mask": [], "labels": []}
        for e in encoded:
            n = width - len(e["input_ids"])
            rows = {"input_ids": (list(e["input_ids"]), self.pad_token_id),
                    "attention_mask": ([1] * len(e["input_ids"]), 0)}
            if with_labels:
                rows["labels"] = (list(e["labels"]), IGNORE_INDEX)
            for key, (row, fill) in rows.items():
                batch[key].append(row + [fill] * n if side == "right" else [fill] * n + row)
        out = {k: torch.tensor(v, dtype=torch.long) for k, v in batch.items() if v}
        if all("num_images" in e for e in encoded):
            out["num_images"] = torch.tensor([e["num_images"][0] for e in encoded], dtype=torch.long)
        return out


def normalise_conversation(conversation: Conversation, sample: str | None = None) -> list[tuple[str, str]]:
    """``[(role, text)]`` with roles mapped to user/assistant; bad turns raise :class:`DataError`."""
    if isinstance(conversation, (str, bytes)) or not isinstance(conversation, Sequence):
        raise DataError(f"{_name(sample)}: a conversation is a list of turns, got {type(conversation).__name__}")
    turns = []
    for index, turn in enumerate(conversation):
        speaker = turn.get("from") if hasattr(turn, "get") else None
        role = ROLE_ALIASES.get(str(speaker).lower()) if speaker is not None else None
        if role is None:
            raise DataError(
                f"{_name(sample)}: turn {index} has speaker {speaker!r}",
                hint="turns look like {'from': 'user' | 'assistant', 'value': text} (human/gpt also accepted)",
            )
        value = turn.get("value")
        if not isinstance(value, str):
            raise DataError(f"{_name(sample)}: turn {index} has no text 'value'")
        turns.append((role, value))
    return turns


def _name(sample: str | None) -> str:
    return f"sample {sample}" if sample is not None else "conversation"


_answers_cut = 0


def _warn_answer_cut(sample: str | None, length: int, max_len: int) -> None:
    """A sample truncated before its first answer token teaches nothing: say so (the first time, then
    every hundredth), since the run goes on without an error."""
    global _answers_cut
    _answers_cut += 1
    if _answers_cut == 1 or _answers_cut % 100 == 0:
        log.warning("%s: %d tokens cut to max_len %d leave no answer token to learn (%d such samples so far); "
                    "raise max_txt_len", _name(sample), length, max_len, _answers_cut)
