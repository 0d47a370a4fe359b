"""The Hugging Face machinery every backend of this plugin shares (``qwen``, ``hf_causal_lm``,
``hf_seq2seq``): where a model comes from (hub id, local directory, package data, cache root),
loading it offline or building it randomly from its config with a fixed seed, dtype (with the
architecture's fp32-kept modules, e.g. T5's ``wo``), freezing, LoRA (peft), gradient
checkpointing, generation with streaming, LoRA export, and weights coverage (``missing_keys``).

Options of the ``model.llm`` block this module reads (every backend accepts them)::

    model: facebook/opt-2.7b          # hub id, local directory, or "package:path" package data
    trust_remote_code: false
    dtype: float32                    # float32 | bfloat16 | float16 | auto
    device_map: null                  # e.g. auto / cuda:0 (accelerate); null keeps one device
    gradient_checkpointing: false
    random_init: false                # build from config.json with random weights (tiny tests)
    init_seed: 0                      # seed of that random init, so a rebuild is identical
    freeze: true
    lora: false                       # peft LoRA adapters (freeze the rest)
    lora_r: 8
    lora_alpha: 32
    lora_dropout: 0.05
    lora_target_modules: null         # default per architecture, see LORA_TARGETS
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

from mm_core.base.llm import BaseLLM
from mm_core.download import cache_root
from mm_core.errors import ConfigError

log = logging.getLogger(__name__)

#: LoRA target modules per ``config.model_type`` (Qwen-1 and GPT-2 fuse q/k/v into ``c_attn``; T5 names them q, v).
LORA_TARGETS = {"qwen": ["c_attn"], "gpt2": ["c_attn"], "t5": ["q", "v"], "mt5": ["q", "v"], "umt5": ["q", "v"]}
DEFAULT_LORA_TARGETS = ["q_proj", "v_proj"]

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}

class HFBackend(BaseLLM):
    """A transformers model and its tokenizer behind :class:`BaseLLM`; subclasses add the prompt
    layout (``encode_conversation`` / ``encode_prompt``) and their stop tokens."""

    #: the transformers auto class of :func:`load_hf_model`, and peft's task type for LoRA
    auto_class = "AutoModelForCausalLM"
    lora_task_type = "CAUSAL_LM"

    def __init__(self, model: torch.nn.Module, tokenizer: Any) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.hidden_size = int(hidden_size_of(base_config(model)))

    @classmethod
    def load_parts(cls, cfg: DictConfig | dict) -> tuple[DictConfig, torch.nn.Module, Any, set[int]]:
        """The block (as a ``DictConfig``), the prepared model, its tokenizer, and the ids of the
        tensors the weight files did not fill (hand them to :meth:`record_missing`)."""
        cfg = OmegaConf.create(cfg) if isinstance(cfg, dict) else cfg
        source = cfg.get("model") or cfg.get("llm_model")
        if not source:
            raise ConfigError(f"model.llm.model is required for the LLM backend '{cfg.get('name', cls.__name__)}' "
                              "(a hub id or a local directory)", hint="e.g. model.llm.model: facebook/opt-2.7b")
        path = resolve_llm_path(str(source))
        trust = bool(cfg.get("trust_remote_code", False))
        tokenizer = load_tokenizer(path, trust)
        model, missing = load_hf_model(path, trust, cfg, cls.auto_class)
        unfilled = {id(t) for name, t in model.state_dict(keep_vars=True).items() if name in missing}
        if cfg.get("gradient_checkpointing", False):
            enable_gradient_checkpointing(model)
        if cfg.get("freeze", True) or cfg.get("lora", False):
            model.requires_grad_(False)
        if cfg.get("lora", False):
            model = add_lora(model, cfg, cls.lora_task_type)
        return cfg, model, tokenizer, unfilled

    def record_missing(self, unfilled: set[int]) -> None:
        """``missing_keys``: this module's state-dict names of the tensors no weight file filled."""
        self.missing_keys = tuple(k for k, t in self.state_dict(keep_vars=True).items() if id(t) in unfilled)

    # -- the contract ----------------------------------------------------------------------
    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(input_ids)

    def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                labels: torch.Tensor | None = None) -> Any:
        return self.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, labels=labels,
                          return_dict=True)

    def pipeline_parts(self) -> tuple[list[torch.nn.Module], Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]:
        """Decoder blocks + head as pipeline pieces, and the loss on the head's logits (mm_qwen_llm.pipeline)."""
        from mm_qwen_llm.pipeline import causal_lm_loss, pipeline_parts

        return pipeline_parts(self.model), causal_lm_loss

    def generate_texts(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                       on_text: Callable[[str], None] | Sequence[Callable[[str], None] | None] | None,
                       settings: dict[str, Any], **fixed: Any) -> list[str]:
        """``model.generate`` on embeddings with ``settings`` (see :func:`generation_settings`) and
        ``fixed`` (stop and pad ids); ``on_text`` streams a batch of one, or one callback per row."""
        if isinstance(on_text, (list, tuple)):
            streamer = RowStreamer(self.tokenizer, on_text)
        else:
            streamer = CallbackStreamer(self.tokenizer, on_text) if on_text is not None else None
        output = self.model.generate(inputs_embeds=inputs_embeds, attention_mask=attention_mask, streamer=streamer,
                                     **fixed, **settings)
        # With only embeddings as input, a decoder-only generate returns the new tokens alone; an
        # encoder-decoder's start with the decoder start token, which is special.
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

    ``package:path`` names package data (the tiny models: ``mm_qwen_llm:assets/tiny_qwen2``); a
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


def load_hf_model(path: str, trust_remote_code: bool, cfg: DictConfig,
                  auto_class: str = "AutoModelForCausalLM") -> tuple[torch.nn.Module, set[str]]:
    """``auto_class`` (a transformers auto class) from ``path``, or randomly initialised from its
    config; the names of the tensors the directory's files did not fill (transformers initialised
    them). The architecture's fp32-kept modules stay fp32 under bf16/fp16 either way, and an
    untied ``lm_head`` in the files stays untied (:func:`untie_lm_head`)."""
    import transformers

    auto = getattr(transformers, auto_class)
    dtype = _dtype(cfg.get("dtype", "float32"))
    config = _hf_call(transformers.AutoConfig.from_pretrained, path, trust_remote_code, what="config")
    if cfg.get("random_init", False):
        # A fixed seed: a frozen random LLM must come back identical when a checkpoint
        # (which holds trainable tensors only) is loaded into a rebuilt model.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(cfg.get("init_seed", 0)))
            model = auto.from_config(config, trust_remote_code=trust_remote_code)
            untie_lm_head(model, path, random_init=True)
        return to_dtype(model, dtype if dtype != "auto" else torch.float32), set()
    kwargs: dict[str, Any] = {"dtype": dtype}
    if cfg.get("device_map") is not None:
        kwargs["device_map"] = cfg.device_map if isinstance(cfg.device_map, str) else OmegaConf.to_container(cfg.device_map)
    model, info = _hf_call(auto.from_pretrained, path, trust_remote_code, what="model", output_loading_info=True, **kwargs)
    untie_lm_head(model, path)
    keep_fp32_modules(model, dtype)  # transformers 5 loads T5's wo in the requested dtype
    return model, set(info.get("missing_keys") or ())


def to_dtype(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """``model`` in ``dtype``, but the modules its class keeps in fp32 (``_keep_in_fp32_modules``:
    T5's ``wo``, as LAVIS and transformers' own loading do) stay fp32 under half precision."""
    return keep_fp32_modules(model.to(dtype), dtype)


def keep_fp32_modules(model: torch.nn.Module, dtype: Any) -> torch.nn.Module:
    """Under half precision, the modules ``model``'s class names in ``_keep_in_fp32_modules`` back to fp32."""
    keep = getattr(model, "_keep_in_fp32_modules", None) or []
    if dtype in (torch.float16, torch.bfloat16) and keep:
        for name, module in model.named_modules():
            if any(part in keep for part in name.split(".")):
                module.to(torch.float32)
    return model


def untie_lm_head(model: torch.nn.Module, path: str, random_init: bool = False) -> None:
    """Flan-T5 checkpoints say ``tie_word_embeddings: false`` and hold their own ``lm_head``, but
    transformers 5 forces T5 configs to ``tie_word_embeddings=True`` (a random init, or a later
    ``tie_weights()``, ties the head): mark the config untied and give the head its own parameter
    with the files' values (random ones, N(0, 1) as T5 draws them, for ``random_init``)."""
    config_file = Path(path) / "config.json"
    if not config_file.is_file() or json.loads(config_file.read_text(encoding="utf-8")).get("tie_word_embeddings", True):
        return
    head, embeddings = model.get_output_embeddings(), model.get_input_embeddings()
    if head is None:
        return
    model.config.tie_word_embeddings = False  # so that no later tie_weights() ties it again
    if head.weight is not embeddings.weight:  # transformers kept the files' distinct head
        return
    stored = torch.randn_like(head.weight) if random_init else read_stored_tensor(Path(path), "lm_head.weight")
    if stored is None:
        return
    head.weight = torch.nn.Parameter(stored.to(head.weight.dtype, copy=True), requires_grad=head.weight.requires_grad)


def read_stored_tensor(folder: Path, key: str) -> torch.Tensor | None:
    """Tensor ``key`` from a model directory's safetensors (single or sharded) or ``pytorch_model.bin``."""
    from safetensors import safe_open

    index = folder / "model.safetensors.index.json"
    files = [folder / json.loads(index.read_text())["weight_map"][key]] if index.is_file() and key in \
        json.loads(index.read_text()).get("weight_map", {}) else [folder / "model.safetensors"]
    for file in files:
        if file.is_file():
            with safe_open(str(file), framework="pt") as handle:
                if key in handle.keys():
                    return handle.get_tensor(key)
    bin_file = folder / "pytorch_model.bin"
    if bin_file.is_file():
        return torch.load(bin_file, map_location="cpu", weights_only=True).get(key)
    return None


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


def add_lora(model: torch.nn.Module, cfg: DictConfig, task_type: str = "CAUSAL_LM") -> torch.nn.Module:
    """Wrap ``model`` with peft LoRA adapters on the attention projections of its architecture."""
    from peft import LoraConfig, get_peft_model

    targets = lora_targets(getattr(model.config, "model_type", ""), cfg.get("lora_target_modules"))
    lora = LoraConfig(
        task_type=task_type,
        r=int(cfg.get("lora_r", 8)),
        lora_alpha=int(cfg.get("lora_alpha", 32)),
        lora_dropout=float(cfg.get("lora_dropout", 0.05)),
        target_modules=list(targets),
    )
    return get_peft_model(model, lora)


def lora_targets(model_type: str, configured: Sequence[str] | None = None) -> list[str]:
    """LoRA target modules: the configured ones, else :data:`LORA_TARGETS` for the architecture,
    else ``q_proj``/``v_proj`` (Qwen2.x / Qwen3, LLaMA, Mistral, OPT)."""
    if configured:
        return list(configured)
    return list(LORA_TARGETS.get(model_type, DEFAULT_LORA_TARGETS))


def base_config(model: torch.nn.Module) -> Any:
    return getattr(model, "config", None) or model.get_base_model().config


def hidden_size_of(config: Any) -> int:
    """Width of the input embeddings (``hidden_size``; T5 calls it ``d_model``, GPT-2 ``n_embd``)."""
    for name in ("hidden_size", "d_model", "n_embd"):
        if getattr(config, name, None):
            return int(getattr(config, name))
    raise ConfigError(f"the LLM config ({type(config).__name__}) names no hidden size")


# -- generation ------------------------------------------------------------------------------
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


class CallbackStreamer(TextStreamer):
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


class RowStreamer(BaseStreamer):
    """Streams each row of a batched generation to its own callback (a text streamer per row;
    a finished row receives pad tokens, which decode to nothing)."""

    def __init__(self, tokenizer: Any, callbacks: Sequence[Callable[[str], None] | None]) -> None:
        self.rows = [CallbackStreamer(tokenizer, cb) if cb is not None else None for cb in callbacks]

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
