"""The dialogue tokenizer: GPT-2's (from a hub id or a directory) or the project's tiny one, plus
the special tokens of the dialogue format.

The tiny tokenizer is a byte-level BPE trained with the ``tokenizers`` library on the sentences
of :mod:`mm_avsd_dialogue.sample_data`; it ships as package data (``assets/tiny_tokenizer.json``)
and :func:`train_tiny_tokenizer` regenerates it byte for byte.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from mm_core.errors import ConfigError

#: Special tokens of the dialogue format (LAVIS' set and order).
SPECIAL_TOKENS: tuple[str, ...] = ("<bos>", "<eos>", "<speaker1>", "<speaker2>", "<cap>", "<video>", "<pad>")
SPECIAL_TOKENS_DICT: dict[str, Any] = {
    "bos_token": "<bos>",
    "eos_token": "<eos>",
    "pad_token": "<pad>",
    "additional_special_tokens": ["<speaker1>", "<speaker2>", "<cap>", "<video>"],
}

#: Name that selects the tiny tokenizer in configs (``tokenizer: tiny``).
TINY = "tiny"
TINY_VOCAB_SIZE = 512
TINY_TOKENIZER_RESOURCE = "assets/tiny_tokenizer.json"


def tiny_tokenizer_path() -> Path:
    """Where the shipped tiny tokenizer file is."""
    return Path(str(resources.files("mm_avsd_dialogue").joinpath(TINY_TOKENIZER_RESOURCE)))


def train_tiny_tokenizer(path: str | Path | None = None) -> Path:
    """Train the tiny byte-level BPE tokenizer and write it to ``path`` (default: the package's
    asset). Deterministic: the corpus and the trainer settings are fixed."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from mm_avsd_dialogue.sample_data import corpus_lines

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB_SIZE,
        special_tokens=list(SPECIAL_TOKENS),  # ids 0..6, so every later id is a plain token
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # any text stays encodable
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus_lines(), trainer=trainer)
    out = Path(path) if path is not None else tiny_tokenizer_path()
    out.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out), pretty=True)
    return out


@lru_cache(maxsize=8)
def load_tokenizer(spec: str = "gpt2") -> Any:
    """A Hugging Face fast tokenizer with the dialogue special tokens.

    ``spec`` is ``"tiny"`` (the shipped tokenizer), a directory, or a hub id such as ``"gpt2"``
    (read from the local cache when offline).
    """
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if spec == TINY:
        tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(tiny_tokenizer_path()))
    else:
        try:
            tokenizer = AutoTokenizer.from_pretrained(spec)
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"cannot load the tokenizer '{spec}': {exc}",
                hint="give a directory holding a GPT-2 tokenizer, a hub id that is cached locally, "
                "or 'tiny' for the offline tiny tokenizer",
            ) from exc
    tokenizer.add_special_tokens(SPECIAL_TOKENS_DICT)
    return tokenizer


def special_token_ids(tokenizer: Any) -> dict[str, int]:
    """``{"<bos>": id, ...}`` for every special token."""
    return dict(zip(SPECIAL_TOKENS, tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS))))
