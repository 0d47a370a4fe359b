"""The Q-Former's text tokenizer: bert-base-uncased (LAVIS) or a small offline WordPiece one.

LAVIS adds a ``[DEC]`` bos token to bert-base-uncased (hence a 30523-word Q-Former vocabulary);
we do the same so checkpoints line up. ``tokenizer: tiny`` builds a character-level WordPiece
vocabulary with the ``tokenizers`` library, for the offline ``tiny`` model types. ``tiny_words`` has
the same 142 ids, but the 32 ``##`` + punctuation pieces (never produced: BERT's pre-tokenizer makes
every punctuation mark a word of its own) become whole words, those of mm's generated data (its
colours, shapes and caption words); other words are still spelled by character. The tiny stage-1
model needs them: over characters, a 32-wide text encoder's [CLS] is nearly the same bag of letters
for every caption, and ITC / ITM stay at chance.
"""

from __future__ import annotations

import string

from mm_core.errors import ConfigError
from mm_core.generated_data import SHAPE_COLOURS, SHAPE_KINDS

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]


def build_text_tokenizer(name: str):
    """A Hugging Face fast tokenizer for the Q-Former's text branch."""
    if name in ("tiny", "tiny_words"):
        return _tiny_wordpiece(whole_words=name == "tiny_words")
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
    except Exception as exc:
        raise ConfigError(
            f"model.tokenizer '{name}' could not be loaded: {exc}",
            hint="give a local directory with the bert-base-uncased tokenizer files, or use 'tiny' offline",
        ) from exc
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    return tokenizer


def tiny_words() -> list[str]:
    """The 32 whole words of ``tiny_words``: the generated data's colours and shapes, then its caption
    and question words (the plural ``s`` is the character piece ``##s``)."""
    common = ["the", "an", "of", "on", "in", "is", "are", "there", "one", "two", "three", "image", "picture",
              "showing", "against", "background", "backdrop", "white", "gray", "black", "what", "color", "shape"]
    words = [*SHAPE_COLOURS, *SHAPE_KINDS, *common][: len(string.punctuation)]
    return words + [f"[unused{i}]" for i in range(len(string.punctuation) - len(words))]


def _tiny_wordpiece(whole_words: bool = False):
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece
    from transformers import PreTrainedTokenizerFast

    pieces = list(string.ascii_lowercase + string.digits + string.punctuation)
    continued = ["##" + p for p in string.ascii_lowercase + string.digits]
    continued += tiny_words() if whole_words else ["##" + p for p in string.punctuation]
    vocab = {tok: i for i, tok in enumerate(SPECIALS + pieces + continued)}
    backend = Tokenizer(WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    backend.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]", bos_token="[DEC]",
    )
