"""LAVIS' BLIP-2 LLM zoo as compositions: ``blip2_opt``, ``blip2_t5``, ``blip2_vicuna_instruct``, ``blip2_t5_instruct``.

Each is :class:`~mm_blip2.models.blip2_llm.Blip2LLM` with a generic Hugging Face backend reached by name
(``hf_causal_lm`` or ``hf_seq2seq``, mm-plugin-qwen-llm) and LAVIS' flat keys: ``opt_model`` /
``t5_model`` / ``llm_model`` name the language model (a hub id or a local directory), ``prompt``,
``max_txt_len``, ``max_output_txt_len``, ``apply_lemmatizer``, ``qformer_text_input``,
``num_few_shot_examples`` / ``few_shot_prob``. An explicit ``model.llm`` block wins key by key.

Layouts (the backend's ``prompt_format``; docs/llm_backend.md): OPT ``plain`` — the query outputs,
then BOS, prompt and caption + "\\n", loss on the caption; generation stops at "\\n". T5 ``seq2seq`` —
queries + prompt into the encoder, the caption into the decoder. InstructBLIP ``vicuna`` / ``seq2seq``,
and the instruction (the user turn) also enters the Q-Former with the queries (LAVIS' instruction-aware
Q-Former: ``qformer_text_input``; the text branch is ``blip2_feature_extractor``'s, loaded from the
same checkpoint keys).

``pretrained`` / ``finetuned`` read LAVIS' files (``opt_proj`` / ``t5_proj`` / ``llm_proj`` ->
``llm_proj``, :data:`mm_blip2.checkpoints.KEY_TABLE`); ``hf_pretrained`` reads a Hugging Face
``Blip2ForConditionalGeneration`` / ``InstructBlipForConditionalGeneration`` directory, the language
model included (built from the directory's ``text_config``, :func:`mm_blip2.hf_composite.text_model_dir`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from omegaconf import DictConfig, OmegaConf
from transformers.models.blip_2.modeling_blip_2 import Blip2TextEmbeddings

from mm_blip2.models.blip2_llm import Blip2LLM
from mm_blip2.models.feature_extractor import Blip2FeatureExtractor
from mm_core.base.llm import IMAGE_MARK
from mm_core.base.model import config_value
from mm_core.errors import ConfigError

#: LAVIS' VQA prompt (its configs' ``run.prompt``; a model used without one answers the bare question).
VQA_PROMPT = "Question: {} Short answer:"


class LavisBlip2LLM(Blip2LLM):
    """What the four LAVIS archs share: flat LLM keys, LAVIS' generate / predict_answers signatures."""

    backend: ClassVar[str] = "hf_causal_lm"
    llm_key: ClassVar[str] = "opt_model"
    prompt_format: ClassVar[str] = "plain"
    #: LAVIS' generate(...) defaults that differ between the archs
    generate_defaults: ClassVar[dict[str, Any]] = {"num_beams": 5, "max_length": 30, "repetition_penalty": 1.0}
    #: LAVIS' predict_answers length_penalty default (0 for the causal LMs, -1 for T5)
    answer_length_penalty: ClassVar[float] = 0.0

    def __init__(self, cfg: DictConfig):
        cfg = OmegaConf.merge({"prompt": "", "max_txt_len": 32}, cfg)
        if int(config_value(cfg, "num_few_shot_examples", 0)) > 0:
            raise ConfigError("model.num_few_shot_examples > 0 (InstructBLIP's few-shot training) is not supported",
                              hint="set model.num_few_shot_examples: 0 (LAVIS' default)")
        super().__init__(cfg)
        self.apply_lemmatizer = bool(config_value(cfg, "apply_lemmatizer", False))
        self._lemmatizer: Any = None

    def llm_config(self, cfg: DictConfig) -> DictConfig:
        """``model.llm`` from LAVIS' flat keys: the backend, ``<llm_key>`` -> ``model`` (or the language model
        of ``hf_pretrained``), frozen, this arch's prompt format; an explicit ``model.llm`` wins key by key."""
        arch = self if isinstance(self, type) else type(self)  # weights_plan passes the class
        explicit = config_value(cfg, "llm", None) or {}
        if explicit.get("name") and explicit.get("name") != arch.backend:
            return OmegaConf.create(explicit)
        flat: dict[str, Any] = {"name": arch.backend, "freeze": True}
        if arch.backend == "hf_causal_lm":
            flat["prompt_format"] = arch.prompt_format
        if config_value(cfg, "max_output_txt_len", None) is not None:
            flat["max_answer_len"] = int(config_value(cfg, "max_output_txt_len", 256))
        source = config_value(cfg, arch.llm_key, None)
        if source:
            flat["model"] = str(source)
        elif config_value(cfg, "hf_pretrained", None) and not explicit.get("model"):
            from mm_blip2.hf_composite import text_model_dir

            flat.update(model=str(text_model_dir(str(cfg.hf_pretrained), write=not isinstance(self, type))), random_init=True)
        return OmegaConf.merge(OmegaConf.create(flat), OmegaConf.create(explicit))

    def caption_conversation(self, caption: str | None) -> list[dict[str, str]]:
        """User ``prompt`` -> caption; a caption that already starts with the prompt (LAVIS' ``blip_caption``
        processor with ``prompt: "a photo of "``) gives it once, as LAVIS' single text with the prompt masked."""
        conversation = super().caption_conversation(caption)
        prompt = conversation[0]["value"]
        if caption is not None and prompt and caption.startswith(prompt):
            conversation[1]["value"] = caption[len(prompt):].lstrip()
        return conversation

    @torch.no_grad()
    def generate(self, samples: dict[str, Any], use_nucleus_sampling: bool = False, num_beams: int | None = None,
                 max_length: int | None = None, min_length: int = 1, top_p: float = 0.9,
                 repetition_penalty: float | None = None, length_penalty: float = 1.0, num_captions: int = 1,
                 temperature: float = 1.0, **generation: Any) -> list[str]:
        """LAVIS' ``generate``: ``num_captions`` texts per image (``num_return_sequences``), the prompt from
        ``samples["prompt"]`` (a string or one per sample) else the model's ``prompt``."""
        d = type(self).generate_defaults
        options = {"length_penalty": length_penalty, **generation}
        if num_captions > 1:
            options["num_return_sequences"] = num_captions
        return super().generate(samples, use_nucleus_sampling=use_nucleus_sampling,
                                num_beams=d["num_beams"] if num_beams is None else num_beams,
                                max_length=d["max_length"] if max_length is None else max_length,
                                min_length=min_length, top_p=top_p, temperature=temperature,
                                repetition_penalty=d["repetition_penalty"] if repetition_penalty is None
                                else repetition_penalty, **options)

    @torch.no_grad()
    def predict_answers(self, samples: dict[str, Any], num_beams: int = 5, inference_method: str = "generate",
                        max_len: int = 10, min_len: int = 1, num_ans_candidates: int = 128,
                        answer_list: list[str] | None = None, prompt: str = "", length_penalty: float | None = None,
                        **generation: Any) -> list[str]:
        """LAVIS' ``predict_answers``: each question through ``prompt`` (a ``{}`` template; the bare
        question when empty), ``num_beams`` beams, ``max_len`` new tokens; lemmatised with ``apply_lemmatizer``."""
        if inference_method != "generate":
            raise ConfigError(f"{type(self).__name__} answers by generation, not inference_method={inference_method!r}",
                              hint="set run.inference_method: generate")
        questions = samples["text_input"]
        questions = [questions] if isinstance(questions, str) else list(questions)
        conversations = [[{"from": "user", "value": prompt.format(q) if prompt else q}] for q in questions]
        length_penalty = type(self).answer_length_penalty if length_penalty is None else length_penalty
        options = {"length_penalty": length_penalty, **generation}
        answers = self._generate(conversations, samples.get("image"), None, num_beams=num_beams,
                                 max_new_tokens=max_len, min_new_tokens=min_len, **options)
        answers = [a.strip() for a in answers]
        if self.apply_lemmatizer or samples.get("apply_lemmatizer"):
            answers = [self._lemmatize(a) for a in answers]
        return answers

    def _lemmatize(self, answer: str) -> str:
        """LAVIS' answer post-processing: nouns and verbs to their lemma (spaCy's en_core_web_sm)."""
        if self._lemmatizer is None:
            try:
                import spacy

                self._lemmatizer = spacy.load("en_core_web_sm")
            except (ImportError, OSError) as exc:
                raise ConfigError(f"model.apply_lemmatizer needs spaCy with en_core_web_sm: {exc}",
                                  hint="pip install spacy && python -m spacy download en_core_web_sm, "
                                       "or set model.apply_lemmatizer: false") from exc
        return " ".join(t.lemma_ if t.pos_ in ("NOUN", "VERB") else t.text for t in self._lemmatizer(answer))


class Blip2OPT(LavisBlip2LLM):
    """BLIP-2 with OPT (LAVIS' ``blip2_opt``): types ``pretrain_opt2.7b``, ``pretrain_opt6.7b``,
    ``caption_coco_opt2.7b``, ``caption_coco_opt6.7b``, ``tiny``. The backend's ``plain`` layout ends each
    caption with "\\n" and stops generating there (LAVIS' and Hugging Face's converted checkpoints' ``eos``)."""


class Blip2T5(LavisBlip2LLM):
    """BLIP-2 with Flan-T5 (LAVIS' ``blip2_t5``): types ``pretrain_flant5xl``, ``pretrain_flant5xxl``,
    ``caption_coco_flant5xl``, ``tiny``."""

    backend = "hf_seq2seq"
    llm_key = "t5_model"
    answer_length_penalty = -1.0


class InstructQFormerMixin:
    """InstructBLIP's Q-Former: the instruction's tokens (bert-base-uncased, truncated from the left to
    ``max_txt_len``) enter with the queries, which then attend to the image (``qformer_text_input``)."""

    def setup_instruction_branch(self, cfg: DictConfig) -> None:
        from mm_blip2.text_tokenizer import build_text_tokenizer

        self.text_embeddings = Blip2TextEmbeddings(self.qformer.config)
        self.text_embeddings.apply(self.qformer._init_weights)
        self.qformer_tokenizer = build_text_tokenizer(str(config_value(cfg, "tokenizer", "bert-base-uncased")))
        self.qformer_tokenizer.truncation_side = "left"

    def qformer_instructions(self, conversations: list[list[dict[str, str]]] | None, counts: list[int]) -> list[str] | None:
        """Per image, its sample's instruction: the last user turn, image marks removed."""
        if not self.qformer_text_input or conversations is None:
            return None
        texts = []
        for conversation, n in zip(conversations, counts):
            users = [t["value"] for t in conversation if t.get("from") in ("user", "human")]
            texts += [" ".join(users[-1].replace(IMAGE_MARK, " ").split()) if users else ""] * n
        return texts

    def encode_images(self, images: torch.Tensor, instructions: list[str] | None = None) -> torch.Tensor:
        if instructions is None:
            return super().encode_images(images)
        images = images.to(self.device)
        tokens = self.qformer_tokenizer(instructions, padding="longest", truncation=True, max_length=self.max_txt_len,
                                        return_tensors="pt").to(self.device)
        image_embeds = self.encode_image(images).float()
        queries = Blip2FeatureExtractor.multimodal_queries(self, image_embeds, tokens.input_ids, tokens.attention_mask)
        return self.llm_proj(queries)


class Blip2VicunaInstruct(InstructQFormerMixin, LavisBlip2LLM):
    """InstructBLIP with Vicuna (LAVIS' ``blip2_vicuna_instruct``): types ``vicuna7b``, ``vicuna13b``, ``tiny``."""

    llm_key = "llm_model"
    prompt_format = "vicuna"
    generate_defaults = {"num_beams": 5, "max_length": 256, "repetition_penalty": 1.5}

    def __init__(self, cfg: DictConfig):
        cfg = OmegaConf.merge({"max_txt_len": 128, "max_output_txt_len": 256}, cfg)
        self.qformer_text_input = bool(config_value(cfg, "qformer_text_input", True))
        super().__init__(cfg)
        if self.qformer_text_input:
            self.setup_instruction_branch(cfg)


class Blip2T5Instruct(InstructQFormerMixin, LavisBlip2LLM):
    """InstructBLIP with Flan-T5 (LAVIS' ``blip2_t5_instruct``): types ``flant5xl``, ``flant5xxl``, ``tiny``."""

    backend = "hf_seq2seq"
    llm_key = "t5_model"
    generate_defaults = {"num_beams": 5, "max_length": 256, "repetition_penalty": 1.5}
    answer_length_penalty = -1.0

    def __init__(self, cfg: DictConfig):
        cfg = OmegaConf.merge({"max_txt_len": 128, "max_output_txt_len": 256}, cfg)
        self.qformer_text_input = bool(config_value(cfg, "qformer_text_input", True))
        super().__init__(cfg)
        if self.qformer_text_input:
            self.setup_instruction_branch(cfg)
