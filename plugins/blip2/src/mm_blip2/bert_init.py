"""``model.qformer_init``: the Q-Former started from a local ``bert-base-uncased`` copy, as LAVIS'
``Blip2Base.init_Qformer`` and ``Blip2Qformer.__init__`` do before stage-1 pretraining.

What LAVIS takes from BERT (``BertLMHeadModel.from_pretrained("bert-base-uncased")``): the embeddings
(word, position, LayerNorm; BERT's token-type table is not part of the Q-Former), every layer's
self-attention and feed-forward, and the MLM head (``cls.predictions``, the stage-1 LM head). The
cross-attention layers and the query tokens are new. The word table grows by one row for ``[DEC]``
(``resize_token_embeddings``; the new row keeps its random init). Then every ``*_query`` parameter
(the queries' feed-forward) is copied from its text twin. The weights table shows the three
sources: the BERT directory, the same directory's text FFN copied to ``*_query``, and fresh.

The directory is what ``save_pretrained`` writes (``config.json``, ``model.safetensors`` or
``pytorch_model.bin``, ``vocab.txt``): bert-base-uncased as it ships, or any BERT of the model's
Q-Former dimensions. A hub id is fetched only when the hub is reachable.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from mm_blip2.checkpoints import Blip2LoadReport, MappedState, load_mapped, map_lavis_keys
from mm_core.errors import ConfigError
from mm_core.weights import WeightSources

#: BERT keys the Q-Former has no place for (LAVIS' BertEmbeddings has no token types; no pooler).
_UNUSED = re.compile(r"^(bert\.pooler\.|bert\.embeddings\.token_type_embeddings\.|bert\.embeddings\.position_ids"
                     r"|cls\.seq_relationship\.|cls\.predictions\.decoder\.)")
_TEXT_FFN = re.compile(r"^(bert\.encoder\.layer\.\d+\.)(intermediate|output)\.")


def bert_directory(location: str) -> Path:
    """The local directory of ``model.qformer_init`` (a hub id is fetched when the hub is reachable)."""
    folder = Path(location).expanduser()
    if folder.is_dir():
        return folder
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(location, allow_patterns=["config.json", "*.safetensors", "vocab.txt"]))
    except Exception as exc:
        raise ConfigError(
            f"model.qformer_init '{location}' is not a local directory and could not be fetched: {exc}",
            hint="download bert-base-uncased (config.json, model.safetensors, vocab.txt) and give its directory",
        ) from exc


def read_bert(folder: Path) -> dict[str, torch.Tensor]:
    """BERT's tensors with ``bert.`` / ``cls.`` names (a bare ``BertModel`` gets the ``bert.`` prefix)."""
    if (folder / "model.safetensors").is_file():
        from safetensors.torch import load_file

        state = load_file(str(folder / "model.safetensors"))
    elif (folder / "pytorch_model.bin").is_file():
        state = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        raise ConfigError(f"model.qformer_init: {folder} holds no model.safetensors or pytorch_model.bin",
                          hint="save the BERT model with save_pretrained into that directory")
    return {k if k.startswith(("bert.", "cls.")) else f"bert.{k}": v for k, v in state.items()}


def as_lavis_qformer(bert: dict[str, torch.Tensor], vocab_rows: int,
                     word_table: torch.Tensor, lm_bias: torch.Tensor) -> dict[str, torch.Tensor]:
    """BERT's tensors under LAVIS' ``Qformer.*`` names, the word table and LM bias grown to
    ``vocab_rows`` (extra rows keep ``word_table`` / ``lm_bias``'s values), the text FFN copied to ``*_query``."""
    out: dict[str, torch.Tensor] = {}
    for key, value in bert.items():
        if _UNUSED.match(key):
            continue
        if key == "bert.embeddings.word_embeddings.weight":
            value = _grow(value, word_table, vocab_rows)
        elif key == "cls.predictions.bias":
            value = _grow(value, lm_bias, vocab_rows)
        out[f"Qformer.{key}"] = value
        if match := _TEXT_FFN.match(key):
            out[f"Qformer.{match.group(1)}{match.group(2)}_query.{key[match.end():]}"] = value.clone()
    return out


def _grow(value: torch.Tensor, current: torch.Tensor, rows: int) -> torch.Tensor:
    if value.shape[0] > rows:
        raise ConfigError(f"model.qformer_init has a vocabulary of {value.shape[0]}, the Q-Former {rows}",
                          hint="model.qformer.vocab_size must be at least the BERT vocabulary (+1 for [DEC])")
    grown = current.detach().clone().to(value.dtype)
    grown[: value.shape[0]] = value
    return grown


def load_bert_init(model: nn.Module, location: str, sources: WeightSources) -> Blip2LoadReport:
    """Initialise ``model``'s Q-Former from the BERT at ``location`` and record, in ``sources``, which
    tensors came from BERT, which are BERT's text FFN copied to ``*_query``, and which are new."""
    folder = bert_directory(location)
    own = model.state_dict()
    word_table = own.get("text_embeddings.word_embeddings.weight")
    vocab_rows = model.qformer.config.vocab_size
    if word_table is None:  # no text branch: the grown table is set aside anyway
        word_table = torch.zeros(vocab_rows, model.qformer.config.hidden_size)
    lm_bias = own.get("lm_head.predictions.bias", torch.zeros(vocab_rows))
    lavis = as_lavis_qformer(read_bert(folder), vocab_rows, word_table, lm_bias)
    report = load_mapped(model, map_lavis_keys(lavis, model) if lavis else MappedState(), str(folder),
                         expected=("qformer.",))
    copied = [k for k in report.loaded if "_query." in k]
    sources.loaded([k for k in report.loaded if k not in copied], str(folder))
    sources.loaded(copied, f"{folder} (text FFN copied to *_query, LAVIS)")
    new = [k for k in own if ".crossattention." in k or k == "query_tokens"]
    sources.fresh(new, "new in LAVIS' init_Qformer (cross-attention, query tokens)")
    return report
