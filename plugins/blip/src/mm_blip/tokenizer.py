"""BLIP's text tokenizer: bert-base-uncased plus LAVIS' two added tokens, or a small offline one.

LAVIS' ``BlipBase.init_tokenizer`` adds ``[DEC]`` (the bos token that starts every decoder input)
and ``[ENC]`` (replacing ``[CLS]`` in front of the image-grounded encoder's input), hence BLIP's
30524-word vocabulary (ids 30522 and 30523). ``tokenizer: tiny`` builds a character-level WordPiece
vocabulary with the ``tokenizers`` library for the offline ``tiny`` model types, with the same
special tokens.
"""

from __future__ import annotations

import string

from mm_core.errors import ConfigError

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "[ENC]"]


def build_tokenizer(name: str):
    """A Hugging Face fast tokenizer with ``bos_token`` ``[DEC]`` and ``enc_token_id`` (``[ENC]``)."""
    if name == "tiny":
        tokenizer = _tiny_wordpiece()
    else:
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(name)
        except Exception as exc:
            raise ConfigError(
                f"model.tokenizer '{name}' could not be loaded: {exc}",
                hint="give a local directory with the bert-base-uncased tokenizer files, or use 'tiny' offline",
            ) from exc
        tokenizer.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})
    tokenizer.enc_token_id = tokenizer.convert_tokens_to_ids("[ENC]")
    return tokenizer


def _tiny_wordpiece():
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece
    from transformers import PreTrainedTokenizerFast

    pieces = list(string.ascii_lowercase + string.digits + string.punctuation)
    vocab = {tok: i for i, tok in enumerate(SPECIALS + pieces + ["##" + p for p in pieces])}
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
        sep_token="[SEP]", mask_token="[MASK]", bos_token="[DEC]", additional_special_tokens=["[ENC]"],
        clean_up_tokenization_spaces=True,  # as bert-base-uncased's tokenizer
    )
