"""A test plugin: the ``tiny_gpt2`` LLM backend (transformers GPT-2, tokenizer trained here).

It proves that ``blip2_llm`` composes with any backend implementing
:class:`mm_core.base.llm.BaseLLM`, without the qwen plugin. Chat template::

    <|user|> text <|end|> <|assistant|> text <|end|> ...
"""

from __future__ import annotations

from functools import lru_cache

import torch
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast
from transformers.generation.streamers import TextStreamer

from mm_core.base.llm import IGNORE_INDEX, IMAGE_MARK, BaseLLM
from mm_core.hookspecs import hookimpl

MM_API_VERSION = "2.0"
SPECIALS = ["<pad>", "<unk>", "<|user|>", "<|assistant|>", "<|end|>", "<|image|>"]
CORPUS = [
    "a cat sitting on a red sofa", "two dogs playing on the grass", "a man riding a bike",
    "describe this image briefly", "what is in the picture", "a plate of food on a table",
    "the sky is blue and the sun is bright", "a bus on a city street", "yes", "no",
]


@hookimpl
def register_llms():
    return {"tiny_gpt2": "blip2_testllm:TinyGPT2LLM"}


@lru_cache(maxsize=1)
def _trained_tokenizer_json() -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    backend.train_from_iterator(CORPUS * 5, trainers.BpeTrainer(vocab_size=160, special_tokens=SPECIALS))
    return backend.to_str()


def build_tokenizer() -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer

    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_trained_tokenizer_json()),
        pad_token="<pad>", unk_token="<unk>", additional_special_tokens=SPECIALS[2:],
    )


class _CallbackStreamer(TextStreamer):
    def __init__(self, tokenizer, on_text):
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.on_text = on_text

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        if text:
            self.on_text(text)


class TinyGPT2LLM(BaseLLM):
    def __init__(self, hidden_size: int = 32, freeze_llm: bool = True, seed: int = 0):
        super().__init__()
        self.tokenizer = build_tokenizer()
        torch.manual_seed(seed)
        config = GPT2Config(vocab_size=len(self.tokenizer), n_embd=hidden_size, n_layer=2, n_head=2,
                            n_positions=256, pad_token_id=self.tokenizer.pad_token_id,
                            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, loss_type="ForCausalLM",
                            initializer_range=0.2)  # a sensitive random LM, so a few steps show
        self.model = GPT2LMHeadModel(config)
        self.hidden_size = hidden_size
        self.image_token = "<|image|>"
        self.image_token_id = self.tokenizer.convert_tokens_to_ids(self.image_token)
        self.ids = {t: self.tokenizer.convert_tokens_to_ids(t) for t in SPECIALS}
        if freeze_llm:
            self.model.requires_grad_(False)

    @classmethod
    def from_config(cls, cfg):
        return cls(hidden_size=int(cfg.get("hidden_size", 32)), freeze_llm=bool(cfg.get("freeze_llm", True)))

    def embed_tokens(self, input_ids):
        return self.model.get_input_embeddings()(input_ids)

    def _text(self, text: str, num_image_tokens: int) -> list[int]:
        ids: list[int] = []
        for i, piece in enumerate(text.replace(self.image_token, "").split(IMAGE_MARK)):
            if i:
                ids += [self.image_token_id] * num_image_tokens
            if piece.strip():
                ids += self.tokenizer(piece.strip(), add_special_tokens=False).input_ids
        return ids

    def _turns(self, conversation, num_image_tokens):
        input_ids, labels = [], []
        for turn in conversation:
            role = "<|user|>" if turn["from"] == "user" else "<|assistant|>"
            body = self._text(turn["value"], num_image_tokens) + [self.ids["<|end|>"]]
            input_ids += [self.ids[role]] + body
            labels += [IGNORE_INDEX] + (body if role == "<|assistant|>" else [IGNORE_INDEX] * len(body))
        return input_ids, labels

    def encode_conversation(self, conversation, num_image_tokens, max_len=None):
        input_ids, labels = self._turns(conversation, num_image_tokens)
        if max_len is not None and len(input_ids) > max_len:
            cut = max_len
            while 0 < cut < len(input_ids) and input_ids[cut] == self.image_token_id \
                    and input_ids[cut - 1] == self.image_token_id:
                cut -= 1  # never keep part of an image
            input_ids, labels = input_ids[:cut], labels[:cut]
        return {"input_ids": input_ids, "labels": labels}

    def encode_prompt(self, conversation, num_image_tokens):
        input_ids, _ = self._turns(conversation, num_image_tokens)
        return input_ids + [self.ids["<|assistant|>"]]

    def forward(self, inputs_embeds, attention_mask, labels=None):
        return self.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, labels=labels)

    def generate(self, inputs_embeds, attention_mask, on_text=None, **generation):
        streamer = _CallbackStreamer(self.tokenizer, on_text) if on_text is not None else None
        out = self.model.generate(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                  eos_token_id=self.ids["<|end|>"], pad_token_id=self.tokenizer.pad_token_id,
                                  streamer=streamer, **generation)
        return [t.strip() for t in self.tokenizer.batch_decode(out, skip_special_tokens=True)]
