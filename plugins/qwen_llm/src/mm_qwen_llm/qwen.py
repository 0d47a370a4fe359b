"""The ``qwen`` LLM backend: a Qwen chat model, its tokenizer, ChatML and the image placeholder.

Options of the ``model.llm`` block (all but ``model`` optional)::

    name: qwen
    model: Qwen/Qwen2.5-7B-Instruct   # hub id, local directory, or "package:path" package data
    trust_remote_code: false          # Qwen-1 (Qwen-7B/14B-Chat) needs true
    dtype: float32                    # float32 | bfloat16 | float16 | auto
    device_map: null                  # e.g. auto / cuda:0 (accelerate); null keeps one device
    gradient_checkpointing: false
    random_init: false                # build from config.json with random weights (tiny tests)
    init_seed: 0                      # seed of that random init, so a rebuild is identical
    freeze: true                      # freeze_llm
    lora: false                       # get_lora (peft)
    lora_r: 8
    lora_alpha: 32
    lora_dropout: 0.05
    lora_target_modules: null         # default per architecture, see LORA_TARGETS
    image_token: null                 # default per tokenizer, see IMAGE_TOKEN_CANDIDATES
    system_message: You are a helpful assistant.

The image placeholder must be a single special token of the tokenizer, so that placeholder
positions are unambiguous: ``<|image_pad|>`` where it exists (Qwen2-VL, Qwen2.5, Qwen3 and the
tiny tokenizer), ``<|extra_0|>`` for Qwen-1 (as MiniGPT4-Qwen). Padding uses ``<|endoftext|>``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from transformers import TextStreamer
from transformers.generation.streamers import BaseStreamer

from mm_core.base.llm import BaseLLM, Conversation
from mm_core.download import cache_root
from mm_core.errors import ConfigError
from mm_qwen_llm.conversation import DEFAULT_SYSTEM_MESSAGE, ChatMLEncoder, special_token_id

log = logging.getLogger(__name__)

#: Placeholder tokens tried in order when ``image_token`` is not set.
IMAGE_TOKEN_CANDIDATES = ("<|image_pad|>", "<|extra_0|>")
#: LoRA target modules per ``config.model_type`` (Qwen-1 fuses q/k/v into ``c_attn``).
LORA_TARGETS = {"qwen": ["c_attn"]}
DEFAULT_LORA_TARGETS = ["q_proj", "v_proj"]
END_OF_TEXT = "<|endoftext|>"

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


class QwenLLM(BaseLLM):
    """A Qwen causal LM (optionally with LoRA adapters) behind the :class:`BaseLLM` contract."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any, image_token: str | None = None,
                 system_message: str = DEFAULT_SYSTEM_MESSAGE) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.hidden_size = int(_base_config(model).hidden_size)
        self.image_token, self.image_token_id = choose_image_token(tokenizer, image_token)
        self.pad_token_id = end_of_text_id(tokenizer)
        _set_pad_token(tokenizer, self.pad_token_id)
        self.encoder = ChatMLEncoder(tokenizer, self.image_token_id, self.pad_token_id, system_message)
        self.stop_token_ids = [self.encoder.im_end, self.pad_token_id]

    # -- building ---------------------------------------------------------------------------
    @classmethod
    def from_config(cls, cfg: DictConfig | dict) -> QwenLLM:
        """Build from the ``model.llm`` block (see the module docstring for the options)."""
        cfg = OmegaConf.create(cfg) if isinstance(cfg, dict) else cfg
        source = cfg.get("model") or cfg.get("llm_model")
        if not source:
            raise ConfigError("model.llm.model is required (a hub id or a local directory)",
                              hint="e.g. model.llm.model: Qwen/Qwen2.5-7B-Instruct")
        path = resolve_llm_path(str(source))
        trust = bool(cfg.get("trust_remote_code", False))
        tokenizer = load_tokenizer(path, trust)
        model, missing = load_causal_lm(path, trust, cfg)
        unfilled = {id(t) for name, t in model.state_dict(keep_vars=True).items() if name in missing}
        if cfg.get("gradient_checkpointing", False):
            enable_gradient_checkpointing(model)
        if cfg.get("freeze", True) or cfg.get("lora", False):
            model.requires_grad_(False)
        if cfg.get("lora", False):
            model = add_lora(model, cfg)
        llm = cls(model, tokenizer, cfg.get("image_token"), str(cfg.get("system_message") or DEFAULT_SYSTEM_MESSAGE))
        llm.missing_keys = tuple(k for k, t in llm.state_dict(keep_vars=True).items() if id(t) in unfilled)
        return llm

    # -- the contract ----------------------------------------------------------------------
    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(input_ids)

    def encode_conversation(self, conversation: Conversation, num_image_tokens: int,
                            max_len: int | None = None, sample: str | None = None) -> dict[str, list[int]]:
        """Ids, labels and ``num_images`` (images whose placeholders survived truncation)."""
        return self.encoder.encode(conversation, num_image_tokens, max_len, sample).as_dict()

    def encode_prompt(self, conversation: Conversation, num_image_tokens: int) -> list[int]:
        return self.encoder.encode_prompt(conversation, num_image_tokens)

    def collate(self, encoded: Sequence[dict[str, list[int]]], padding_side: str | None = None,
                pad_to: int | None = None) -> dict[str, torch.Tensor]:
        return self.encoder.collate(encoded, padding_side, pad_to)

    def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                labels: torch.Tensor | None = None) -> Any:
        return self.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, labels=labels,
                          return_dict=True)

    @torch.no_grad()
    def generate(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                 on_text: Callable[[str], None] | Sequence[Callable[[str], None] | None] | None = None,
                 **generation: Any) -> list[str]:
        """``on_text``: a callback streaming a batch of one, or a list with one callback (or ``None``) per row."""
        settings = generation_settings(generation)
        # An answer never opens a new turn nor contains an image slot (Qwen's own chat stops
        # at <|im_start|>, which would end a weakly trained model's answer before it starts).
        settings.setdefault("suppress_tokens", [self.encoder.im_start, self.image_token_id])
        if isinstance(on_text, (list, tuple)):
            streamer = _RowStreamer(self.tokenizer, on_text)
        else:
            streamer = _CallbackStreamer(self.tokenizer, on_text) if on_text is not None else None
        output = self.model.generate(
            inputs_embeds=inputs_embeds, attention_mask=attention_mask, streamer=streamer,
            eos_token_id=self.stop_token_ids, pad_token_id=self.pad_token_id, **settings,
        )
        # With only embeddings as input, generate returns the new tokens alone.
        return [text.strip() for text in self.tokenizer.batch_decode(output, skip_special_tokens=True)]

    # -- LoRA -------------------------------------------------------------------------------
    @property
    def has_lora(self) -> bool:
        return hasattr(self.model, "peft_config")

    def export_merged(self, out_dir: str | Path) -> Path:
        """Write a plain Hugging Face model directory with LoRA merged in (and the tokenizer)."""
        out = Path(out_dir)
        model = self.model
        if self.has_lora:
            import copy

            model = copy.deepcopy(model).merge_and_unload()
        model.save_pretrained(out, safe_serialization=True)
        self.tokenizer.save_pretrained(out)
        return out


# -- loading ---------------------------------------------------------------------------------
def resolve_llm_path(source: str) -> str:
    """A local directory for ``source`` when there is one, else ``source`` as a hub id.

    ``package:path`` names package data (the tiny model: ``mm_qwen_llm:assets/tiny_qwen2``); a
    relative path that does not exist here is looked up under the cache root, as
    MiniGPT4-Qwen resolves ``ckpt/Qwen7B-chat``.
    """
    if ":" in source and "://" not in source and not Path(source).exists():
        package, _, relative = source.partition(":")
        from importlib import resources

        try:
            found = resources.files(package).joinpath(relative)
        except ModuleNotFoundError as exc:
            raise ConfigError(f"model.llm.model '{source}': no package '{package}'") from exc
        if not found.is_dir():
            raise ConfigError(f"model.llm.model '{source}': package '{package}' has no directory '{relative}'")
        return str(found)
    path = Path(source).expanduser()
    if path.is_dir():
        return str(path)
    if not path.is_absolute() and (cache_root() / path).is_dir():
        return str(cache_root() / path)
    return source


def load_tokenizer(path: str, trust_remote_code: bool) -> Any:
    from transformers import AutoTokenizer

    return _hf_call(AutoTokenizer.from_pretrained, path, trust_remote_code, what="tokenizer")


def load_causal_lm(path: str, trust_remote_code: bool, cfg: DictConfig) -> tuple[torch.nn.Module, set[str]]:
    """``AutoModelForCausalLM`` from ``path`` (or randomly initialised from its config), and the
    names of the tensors the directory's files did not fill (transformers initialised them)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    dtype = _dtype(cfg.get("dtype", "float32"))
    config = _hf_call(AutoConfig.from_pretrained, path, trust_remote_code, what="config")
    if cfg.get("random_init", False):
        # A fixed seed: a frozen random LLM must come back identical when a checkpoint
        # (which holds trainable tensors only) is loaded into a rebuilt model.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(cfg.get("init_seed", 0)))
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
        return model.to(dtype if dtype != "auto" else torch.float32), set()
    kwargs: dict[str, Any] = {"dtype": dtype}
    if cfg.get("device_map") is not None:
        kwargs["device_map"] = cfg.device_map if isinstance(cfg.device_map, str) else OmegaConf.to_container(cfg.device_map)
    model, info = _hf_call(AutoModelForCausalLM.from_pretrained, path, trust_remote_code, what="model",
                           output_loading_info=True, **kwargs)
    return model, set(info.get("missing_keys") or ())


def enable_gradient_checkpointing(model: torch.nn.Module) -> None:
    """Activation checkpointing, non-reentrant so it works with a frozen LLM fed trainable
    embeddings (transformers 5 renames ``gradient_checkpointing_enable``)."""
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:  # transformers 4 and remote-code models (Qwen-1)
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False


def _hf_call(loader: Callable, path: str, trust_remote_code: bool, what: str, **kwargs: Any) -> Any:
    needs_remote_code = _declares_remote_code(path)
    if needs_remote_code and not trust_remote_code:
        raise _remote_code_error(path)
    try:
        return loader(path, trust_remote_code=trust_remote_code, **kwargs)
    except (OSError, ValueError) as exc:
        if "trust_remote_code" in str(exc) and not trust_remote_code:
            raise _remote_code_error(path) from exc
        raise ConfigError(
            f"cannot load the LLM {what} from '{path}': {type(exc).__name__}: {exc}",
            hint="model.llm.model (llm_model) must be a local directory or a hub id reachable from here "
            "(HF_HUB_OFFLINE=1 allows only what is cached)",
        ) from exc


def _declares_remote_code(path: str) -> bool:
    """Whether a local model directory's config needs code from the repository (``auto_map``)."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return False
    from transformers import CONFIG_MAPPING

    return bool(data.get("auto_map")) and data.get("model_type") not in CONFIG_MAPPING


def _remote_code_error(path: str) -> ConfigError:
    return ConfigError(
        f"the LLM at '{path}' ships its own modelling code (e.g. Qwen-7B/14B-Chat), which is only run "
        "when the config allows it",
        hint="set model.llm.trust_remote_code: true (minigpt4qwen: model.llm_trust_remote_code: true) "
        "if you trust that repository",
    )


def _dtype(name: Any) -> Any:
    if isinstance(name, torch.dtype) or name == "auto":
        return name
    try:
        return DTYPES[str(name).lower()]
    except KeyError:
        raise ConfigError(f"model.llm.dtype '{name}' is not one of {', '.join(DTYPES)}, auto") from None


def add_lora(model: torch.nn.Module, cfg: DictConfig) -> torch.nn.Module:
    """Wrap ``model`` with peft LoRA adapters on the attention projections of its architecture."""
    from peft import LoraConfig, get_peft_model

    targets = lora_targets(getattr(model.config, "model_type", ""), cfg.get("lora_target_modules"))
    lora = LoraConfig(
        task_type="CAUSAL_LM",
        r=int(cfg.get("lora_r", 8)),
        lora_alpha=int(cfg.get("lora_alpha", 32)),
        lora_dropout=float(cfg.get("lora_dropout", 0.05)),
        target_modules=list(targets),
    )
    return get_peft_model(model, lora)


def lora_targets(model_type: str, configured: Sequence[str] | None = None) -> list[str]:
    """LoRA target modules: the configured ones, else ``c_attn`` for Qwen-1, ``q_proj``/``v_proj``
    for Qwen2.x / Qwen3 (and other Llama-style models)."""
    if configured:
        return list(configured)
    return list(LORA_TARGETS.get(model_type, DEFAULT_LORA_TARGETS))


# -- tokens ----------------------------------------------------------------------------------
def choose_image_token(tokenizer: Any, configured: str | None = None) -> tuple[str, int]:
    """The image placeholder token and its id (configured, or the first known candidate)."""
    candidates = [configured] if configured else list(IMAGE_TOKEN_CANDIDATES)
    for token in candidates:
        found = special_token_id(tokenizer, token)
        if found is not None:
            return token, found
    raise ConfigError(
        f"the tokenizer has none of {', '.join(candidates)} as a single token, so images have no placeholder",
        hint="set model.llm.image_token to a special token of this tokenizer that text never contains",
    )


def end_of_text_id(tokenizer: Any) -> int:
    """Qwen pads with ``<|endoftext|>`` (Qwen-1's tokenizer calls it ``eod_id``)."""
    found = special_token_id(tokenizer, END_OF_TEXT)
    if found is None:
        found = getattr(tokenizer, "eod_id", None)
    if found is None:
        raise ConfigError(f"the tokenizer has no '{END_OF_TEXT}' token to pad with")
    return int(found)


def _set_pad_token(tokenizer: Any, pad_id: int) -> None:
    if getattr(tokenizer, "pad_token_id", None) == pad_id:
        return
    try:
        tokenizer.pad_token = END_OF_TEXT
    except (AttributeError, ValueError, NotImplementedError):  # Qwen-1's tokenizer refuses; we pad by id anyway
        pass


def _base_config(model: torch.nn.Module) -> Any:
    return getattr(model, "config", None) or model.get_base_model().config


def generation_settings(generation: dict[str, Any]) -> dict[str, Any]:
    """Hugging Face generation arguments; sampling is on when ``top_p`` < 1 or ``temperature``
    differs from 1 unless ``do_sample`` is given."""
    settings = {k: v for k, v in generation.items() if v is not None}
    settings.setdefault("max_new_tokens", 30)
    if "do_sample" not in settings:
        settings["do_sample"] = settings.get("top_p", 1.0) < 1.0 or settings.get("temperature", 1.0) != 1.0
    if not settings["do_sample"]:
        settings.pop("top_p", None)
        settings.pop("temperature", None)
    return settings


class _CallbackStreamer(TextStreamer):
    """Streams decoded text pieces of a batch-of-one generation to a callback."""

    def __init__(self, tokenizer: Any, on_text: Callable[[str], None]) -> None:
        # skip_prompt=False: with embeddings as input, generate never sends prompt ids.
        super().__init__(tokenizer, skip_prompt=False, skip_special_tokens=True)
        self.on_text = on_text

    def put(self, value: torch.Tensor) -> None:
        if value.numel():
            super().put(value)

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        if text:
            self.on_text(text)


class _RowStreamer(BaseStreamer):
    """Streams each row of a batched generation to its own callback (a text streamer per row;
    a finished row receives pad tokens, which decode to nothing)."""

    def __init__(self, tokenizer: Any, callbacks: Sequence[Callable[[str], None] | None]) -> None:
        self.rows = [_CallbackStreamer(tokenizer, cb) if cb is not None else None for cb in callbacks]

    def put(self, value: torch.Tensor) -> None:
        if not value.numel():
            return
        value = value.reshape(len(self.rows), -1)
        for row, tokens in zip(self.rows, value):
            if row is not None:
                row.put(tokens)

    def end(self) -> None:
        for row in self.rows:
            if row is not None:
                row.end()
