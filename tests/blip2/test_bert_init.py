"""``model.qformer_init``: the Q-Former of ``blip2`` started from a BERT directory as LAVIS' init_Qformer
does. The BERT is transformers' own ``BertForMaskedLM`` (tiny random config) saved with save_pretrained,
the layout bert-base-uncased ships; every expectation below is read from that model, not from mm."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from transformers import BertConfig, BertForMaskedLM

from mm_core.config.loader import load_model_defaults
from mm_core.errors import ConfigError


def _blip2_tiny(**extra):
    from mm_blip2.models.blip2_qformer import Blip2Qformer

    cfg = load_model_defaults("blip2", "tiny").model
    for key, value in extra.items():
        OmegaConf.update(cfg, key, value)
    return Blip2Qformer.from_config(cfg)


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    q = load_model_defaults("blip2", "tiny").model.qformer
    config = BertConfig(vocab_size=int(q.vocab_size) - 1, hidden_size=int(q.hidden_size),  # -1: LAVIS adds [DEC]
                        num_hidden_layers=int(q.num_hidden_layers), num_attention_heads=int(q.num_attention_heads),
                        intermediate_size=int(q.intermediate_size), max_position_embeddings=int(q.max_position_embeddings))
    torch.manual_seed(3)
    bert = BertForMaskedLM(config)
    with torch.no_grad():  # distinct, non-default values everywhere (the LM bias and LayerNorms included)
        for p in bert.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    folder = tmp_path_factory.mktemp("bert")
    bert.save_pretrained(folder)
    (folder / "vocab.txt").write_text("\n".join(f"[unused{i}]" for i in range(config.vocab_size)) + "\n")
    return folder, {k: v.clone() for k, v in bert.state_dict().items()}


def test_every_bert_tensor_lands_where_lavis_puts_it(bert_dir):
    folder, bert = bert_dir
    torch.manual_seed(0)
    random = _blip2_tiny().state_dict()
    torch.manual_seed(0)
    model = _blip2_tiny(qformer_init=str(folder), allow_random_init=["visual_encoder"])
    own = model.state_dict()
    n_vocab = bert["bert.embeddings.word_embeddings.weight"].shape[0]
    assert torch.equal(own["text_embeddings.word_embeddings.weight"][:n_vocab], bert["bert.embeddings.word_embeddings.weight"])
    assert torch.equal(own["text_embeddings.word_embeddings.weight"][n_vocab:], random["text_embeddings.word_embeddings.weight"][n_vocab:])
    assert torch.equal(own["text_embeddings.position_embeddings.weight"], bert["bert.embeddings.position_embeddings.weight"])
    assert torch.equal(own["qformer.layernorm.weight"], bert["bert.embeddings.LayerNorm.weight"])
    assert torch.equal(own["lm_head.predictions.bias"][:n_vocab], bert["cls.predictions.bias"])
    assert torch.equal(own["lm_head.predictions.transform.dense.weight"], bert["cls.predictions.transform.dense.weight"])
    assert model.lm_head.predictions.decoder.weight is model.text_embeddings.word_embeddings.weight
    layers = model.qformer.config.num_hidden_layers
    for i in range(layers):
        b, m = f"bert.encoder.layer.{i}.", f"qformer.encoder.layer.{i}."
        for part in ("query", "key", "value"):
            assert torch.equal(own[f"{m}attention.attention.{part}.weight"], bert[f"{b}attention.self.{part}.weight"])
        assert torch.equal(own[f"{m}attention.output.dense.weight"], bert[f"{b}attention.output.dense.weight"])
        assert torch.equal(own[f"{m}attention.output.LayerNorm.bias"], bert[f"{b}attention.output.LayerNorm.bias"])
        for name in ("intermediate.dense.weight", "intermediate.dense.bias", "output.dense.weight",
                     "output.LayerNorm.weight", "output.LayerNorm.bias"):
            assert torch.equal(own[m + name], bert[b + name])
            twin = name.replace("intermediate.", "intermediate_query.").replace("output.", "output_query.")
            assert torch.equal(own[m + twin], bert[b + name]), twin  # LAVIS copies the text FFN to *_query
        cross = [k for k in own if k.startswith(f"{m}crossattention.")]
        assert bool(cross) == (i % 2 == 0)
        for key in cross:  # new in LAVIS: untouched by the BERT file
            assert torch.equal(own[key], random[key]), key
    assert torch.equal(own["query_tokens"], random["query_tokens"])
    sources = model.weight_sources.sources
    assert sources["qformer.encoder.layer.0.attention.attention.query.weight"] == str(folder)
    assert sources["qformer.encoder.layer.0.intermediate_query.dense.weight"].endswith("copied to *_query, LAVIS)")
    assert sources["qformer.encoder.layer.0.crossattention.attention.key.weight"].startswith("fresh: new in LAVIS")
    rows = {(r["module"], r["source"]) for r in model.weight_sources.table(own)}
    assert ("qformer", str(folder)) in rows and any(m == "qformer" and s.startswith("fresh") for m, s in rows)


def test_a_hub_id_offline_fails_naming_the_key(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match="model.qformer_init 'bert-base-uncased' is not a local directory"):
        _blip2_tiny(qformer_init="bert-base-uncased", allow_random_init=["visual_encoder"])


def test_the_plan_lists_the_bert_directory_first(bert_dir):
    from mm_blip2.models.blip2_qformer import Blip2Qformer

    cfg = load_model_defaults("blip2", "tiny").model
    OmegaConf.update(cfg, "qformer_init", str(bert_dir[0]))
    rows = Blip2Qformer.weights_plan(cfg)
    assert rows[0][0].startswith("qformer (BERT's") and rows[0][1] == str(bert_dir[0])
