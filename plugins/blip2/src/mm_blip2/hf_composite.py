"""The language model of a Hugging Face ``Blip2ForConditionalGeneration`` / ``InstructBlipForConditionalGeneration``
directory, as a directory an LLM backend can build from.

Such a directory holds one ``config.json`` (the language model's is its ``text_config``), the tokenizer
files and one set of safetensors (the language model's tensors under ``language_model.*``). The backend
is built from a small directory with that ``text_config`` and the tokenizer (``random_init``), and
:func:`mm_blip2.checkpoints.map_hf_keys` then fills it from ``language_model.*`` — every tensor read once,
from the composite file.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from mm_core.errors import CheckpointError

#: Tokenizer files a Hugging Face processor saves beside the model.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
                   "spiece.model", "tokenizer.model", "added_tokens.json", "chat_template.jinja", "chat_template.json")


def local_dir(path_or_id: str) -> Path:
    """``path_or_id`` when it is a directory, else its configs and tokenizer fetched from the hub (when reachable)."""
    folder = Path(path_or_id).expanduser()
    if folder.is_dir():
        return folder
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(path_or_id, allow_patterns=["*.json", "*.model", "*.txt", "*.safetensors"]))
    except Exception as exc:
        raise CheckpointError(f"hf_pretrained '{path_or_id}' is not a local directory and could not be fetched: {exc}",
                              hint="download the model directory (config.json, tokenizer, *.safetensors) and give its path") from exc


def composite_config(folder: Path) -> dict:
    """The directory's ``config.json``; an error names the file when it is no BLIP-2 / InstructBLIP config."""
    path = folder / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot read the model config: {exc}",
                              hint="hf_pretrained must be a saved Blip2ForConditionalGeneration / InstructBlip directory") from exc
    if not isinstance(config.get("text_config"), dict):
        raise CheckpointError(f"{path} has no text_config: not a BLIP-2 / InstructBLIP model with a language model",
                              hint="give a Blip2ForConditionalGeneration or InstructBlipForConditionalGeneration directory")
    return config


def text_model_dir(path_or_id: str, write: bool = True) -> Path:
    """A directory (under the cache root) with the language model's config and the tokenizer of ``path_or_id``;
    with ``write=False`` only its path (for plans: nothing is read or written)."""
    from mm_core.download import cache_root

    digest = hashlib.sha1(str(Path(path_or_id).expanduser().resolve() if Path(path_or_id).expanduser().exists()
                              else path_or_id).encode()).hexdigest()[:12]
    target = cache_root() / "hf_text_models" / f"{Path(path_or_id).name}-{digest}"
    if not write:
        return target
    folder = local_dir(path_or_id)
    text_config = composite_config(folder)["text_config"]
    target.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        if (folder / name).is_file():
            shutil.copyfile(folder / name, target / name)
    staged = target / "config.json.tmp"
    staged.write_text(json.dumps(text_config, indent=1), encoding="utf-8")
    staged.replace(target / "config.json")
    return target


def vision_layer_norm_eps(path_or_id: str) -> float | None:
    """The vision tower's ``layer_norm_eps`` of the directory (Hugging Face uses it for the blocks and for
    ``post_layernorm``, LAVIS' ``ln_vision``), or ``None`` when the directory does not say."""
    folder = Path(path_or_id).expanduser()
    if not (folder / "config.json").is_file():
        return None
    vision = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("vision_config") or {}
    return float(vision["layer_norm_eps"]) if "layer_norm_eps" in vision else None
