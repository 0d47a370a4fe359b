"""The gpt_dialogue model: its loss against a per-sample computation from GPT-2's outputs,
generation with the video prefix, the base type from a local directory, LAVIS checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from mm_avsd_dialogue.model import GPTDialogue


def _batch(dataset, indices):
    return dataset.collater([dataset[i] for i in indices])


def _sample_logits_and_hidden(model: GPTDialogue, video: torch.Tensor, ids: torch.Tensor,
                              types: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """GPT-2 on one unpadded sample [video frames | tokens]: logits and last hidden states."""
    embeds = torch.cat([model.video_ff(video), model.gpt.transformer.wte(ids)])[None]
    out = model.gpt(inputs_embeds=embeds, token_type_ids=types[None], output_hidden_states=True)
    return out.logits[0], out.hidden_states[-1][0]


def test_loss_equals_independent_computation(splits: dict, tiny_model: GPTDialogue) -> None:
    data = splits["train"]
    indices = [0, 5, len(data) - 1]  # different videos, different history lengths
    batch = _batch(data, indices)
    with torch.no_grad():
        out = tiny_model(batch)
        ce_sum, ce_count, se_sum, se_count = 0.0, 0, 0.0, 0
        for i in indices:
            s = data[i]
            video, ids = s["video_fts"], s["input_ids"]
            types = torch.cat([s["video_token_type_ids"], s["token_type_ids"]])
            logits, hidden = _sample_logits_and_hidden(tiny_model, video, ids, types)
            v = len(video)
            # LM term: position p predicts token p + 1, on the answer only
            labels = torch.cat([torch.full((v,), -100), s["labels"]])
            for p in range(len(labels) - 1):
                if labels[p + 1] != -100:
                    ce_sum -= float(F.log_softmax(logits[p], dim=-1)[labels[p + 1]])
                    ce_count += 1
            # video term: hidden state of frame t predicts frame t + 1
            predicted = tiny_model.video_ff_out(hidden[: v - 1])
            se_sum += float(((predicted - video[1:]) ** 2).sum())
            se_count += (v - 1) * video.shape[1]
    lm, mse = ce_sum / ce_count, se_sum / se_count
    assert float(out["loss_lm"]) == pytest.approx(lm, rel=1e-4)
    assert float(out["loss_video"]) == pytest.approx(mse, rel=1e-4)
    assert float(out["loss"]) == pytest.approx(lm + mse, rel=1e-4)


def test_loss_backpropagates_into_video_layers(splits: dict) -> None:
    from mm_core.api import load_model

    torch.manual_seed(1)
    model = load_model("gpt_dialogue", "tiny")
    model(_batch(splits["train"], [0, 1]))["loss"].backward()
    assert model.video_ff.weight.grad.abs().sum() > 0 and model.video_ff_out.weight.grad.abs().sum() > 0
    assert model.gpt.transformer.wte.weight.grad.abs().sum() > 0


def _greedy_reference(model: GPTDialogue, sample: dict, steps: int, min_len: int) -> list[int]:
    """Greedy decoding by hand: the prompt is video + every non-answer token, each new token
    typed <speaker2>; special tokens other than <eos> never chosen, <eos> not before min_len."""
    special = model.special
    answer_start = next(i for i, x in enumerate(sample["labels"].tolist()) if x != -100)
    ids = sample["input_ids"][:answer_start]
    types = torch.cat([sample["video_token_type_ids"], sample["token_type_ids"][:answer_start]])
    banned = [i for t, i in special.items() if t != "<eos>"]
    generated: list[int] = []
    for step in range(steps):
        all_ids = torch.cat([ids, torch.tensor(generated, dtype=torch.long)])
        all_types = torch.cat([types, torch.full((len(generated),), special["<speaker2>"])])
        logits, _ = _sample_logits_and_hidden(model, sample["video_fts"], all_ids, all_types)
        scores = logits[-1].clone()
        scores[banned] = -float("inf")
        if step < min_len:
            scores[special["<eos>"]] = -float("inf")
        token = int(scores.argmax())
        generated.append(token)
        if token == special["<eos>"]:
            break
    return generated


def test_greedy_generation_matches_hand_decoding_with_video_prefix(splits: dict, tiny_model: GPTDialogue) -> None:
    data = splits["test"]
    first_scores = []
    for scale in (1.0, -2.0):  # the same dialogues with two different videos
        samples = [dict(data[i], video_fts=data[i]["video_fts"] * scale) for i in (0, 1)]
        batch = data.collater(samples)
        with torch.no_grad():
            ids = tiny_model.generate_ids(batch, num_beams=1, max_len=5, min_len=2)
            for row, sample in enumerate(samples):
                expected = _greedy_reference(tiny_model, sample, steps=5, min_len=2)
                assert ids[row].tolist()[: len(expected)] == expected
            s = samples[0]
            prompt = next(i for i, x in enumerate(s["labels"].tolist()) if x != -100)
            types = torch.cat([s["video_token_type_ids"], s["token_type_ids"][:prompt]])
            logits, _ = _sample_logits_and_hidden(tiny_model, s["video_fts"], s["input_ids"][:prompt], types)
            first_scores.append(logits[-1])
    assert not torch.allclose(first_scores[0], first_scores[1])  # the answer depends on the video


@pytest.mark.parametrize("min_len,max_len", [(1, 3), (4, 6)])
def test_beam_search_respects_min_and_max_length(splits: dict, tiny_model: GPTDialogue, min_len: int, max_len: int) -> None:
    data = splits["test"]
    batch = _batch(data, [0, 1])
    ids = tiny_model.generate_ids(batch, num_beams=3, max_len=max_len, min_len=min_len)
    eos, pad = tiny_model.special["<eos>"], tiny_model.special["<pad>"]
    assert ids.shape[0] == 2 and ids.shape[1] <= max_len
    for row in ids.tolist():
        text = []
        for token in row:
            if token in (eos, pad):
                break
            text.append(token)
        assert min_len <= len(text) <= max_len
        assert not set(text) & set(tiny_model.special.values())
    answers = tiny_model.generate(batch, num_beams=3, max_len=max_len, min_len=min_len)
    assert len(answers) == 2 and all(isinstance(a, str) and a for a in answers)


def test_base_type_loads_gpt2_from_a_directory(tmp_path: Path) -> None:
    """model_type base reads GPT-2 from a hub id or a directory; a directory works offline."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from mm_avsd_dialogue.tokenizer import load_tokenizer
    from mm_core.config.loader import load_model_defaults

    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=505, n_embd=32, n_layer=1, n_head=2, n_positions=128)).save_pretrained(tmp_path / "gpt2")
    load_tokenizer("tiny").save_pretrained(tmp_path / "tok")
    cfg = load_model_defaults("gpt_dialogue", "base").model
    assert cfg.len_tokenizer == 50257 + 7 and cfg.len_video_ft == 2048 + 2048 + 128
    cfg = OmegaConf.merge(cfg, {"pretrained": str(tmp_path / "gpt2"), "tokenizer": str(tmp_path / "tok"),
                                "len_tokenizer": 520, "len_video_ft": 2176})
    model = GPTDialogue.from_config(cfg)
    assert model.gpt.transformer.wte.weight.shape == (520, 32)  # resized for the special tokens
    assert model.video_ff.in_features == 2176 and model.video_ff_out.out_features == 2176
    original = GPT2LMHeadModel.from_pretrained(tmp_path / "gpt2")
    assert torch.equal(model.gpt.transformer.h[0].attn.c_attn.weight, original.transformer.h[0].attn.c_attn.weight)
    sources = model.weight_sources.sources
    assert {sources[k] for k in sources if k.startswith("gpt.")} == {str(tmp_path / "gpt2")}
    assert sources["video_ff.weight"].startswith("fresh: ") and sources["video_ff_out.bias"].startswith("fresh: ")


def test_base_type_stops_when_the_gpt2_directory_lacks_weights(tmp_path: Path) -> None:
    """transformers would initialise the missing block randomly; the build stops instead."""
    from safetensors.torch import load_file, save_file
    from transformers import GPT2Config, GPT2LMHeadModel

    from mm_avsd_dialogue.tokenizer import load_tokenizer
    from mm_core.config.loader import load_model_defaults
    from mm_core.errors import CheckpointError

    GPT2LMHeadModel(GPT2Config(vocab_size=505, n_embd=32, n_layer=2, n_head=2, n_positions=128)).save_pretrained(tmp_path / "gpt2")
    weights = tmp_path / "gpt2" / "model.safetensors"
    state = load_file(str(weights))
    save_file({k: v for k, v in state.items() if ".h.1.mlp." not in k}, str(weights), metadata={"format": "pt"})
    load_tokenizer("tiny").save_pretrained(tmp_path / "tok")
    cfg = OmegaConf.merge(load_model_defaults("gpt_dialogue", "base").model,
                          {"pretrained": str(tmp_path / "gpt2"), "tokenizer": str(tmp_path / "tok"), "len_tokenizer": 520})
    with pytest.raises(CheckpointError) as err:
        GPTDialogue.from_config(cfg)
    assert "gpt: 4 tensors" in str(err.value) and str(tmp_path / "gpt2") in str(err.value)
    assert "model.pretrained" in str(err.value)
    model = GPTDialogue.from_config(OmegaConf.merge(cfg, {"allow_random_init": ["gpt.transformer.h.1.mlp"]}))
    assert model.weight_sources.sources["gpt.transformer.h.1.mlp.c_fc.weight"] == "fresh: model.allow_random_init"


def lavis_gpt_dialogue_state(n_embd: int, n_layer: int, vocab: int, positions: int, video: int,
                             seed: int = 5) -> dict[str, torch.Tensor]:
    """A state dict with the key names of LAVIS' ``GPTDialogue`` (lavis/models/gpt_models/
    gpt_dialogue.py: a ``GPT2LMHeadModel`` subclass, so GPT-2's ``transformer.*`` and ``lm_head``,
    plus its own ``video_ff`` / ``video_ff_out`` Linear layers), written down here; random values."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g) * 0.05

    wte = r(vocab, n_embd)
    state = {"transformer.wte.weight": wte, "transformer.wpe.weight": r(positions, n_embd),
             "transformer.ln_f.weight": r(n_embd), "transformer.ln_f.bias": r(n_embd),
             "lm_head.weight": wte,  # tied to wte in GPT-2: the same values under both names
             "video_ff.weight": r(n_embd, video), "video_ff.bias": r(n_embd),
             "video_ff_out.weight": r(video, n_embd), "video_ff_out.bias": r(video)}
    for i in range(n_layer):  # GPT-2's Conv1D layers store (in, out)
        for name, shape in {"ln_1.weight": (n_embd,), "ln_1.bias": (n_embd,),
                            "attn.c_attn.weight": (n_embd, 3 * n_embd), "attn.c_attn.bias": (3 * n_embd,),
                            "attn.c_proj.weight": (n_embd, n_embd), "attn.c_proj.bias": (n_embd,),
                            "ln_2.weight": (n_embd,), "ln_2.bias": (n_embd,),
                            "mlp.c_fc.weight": (n_embd, 4 * n_embd), "mlp.c_fc.bias": (4 * n_embd,),
                            "mlp.c_proj.weight": (4 * n_embd, n_embd), "mlp.c_proj.bias": (n_embd,)}.items():
            state[f"transformer.h.{i}.{name}"] = r(*shape)
    return state


def test_loads_lavis_checkpoint_keys(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from mm_core.api import load_model

    # the tiny type's sizes (configs/models/gpt_dialogue/tiny.yaml)
    lavis_state = lavis_gpt_dialogue_state(n_embd=64, n_layer=2, vocab=512, positions=256, video=4224)
    save_file({k: v.contiguous().clone() for k, v in lavis_state.items()}, tmp_path / "lavis.safetensors")
    torch.manual_seed(123)
    fresh = load_model("gpt_dialogue", "tiny")
    report = fresh.load_checkpoint(tmp_path / "lavis.safetensors", strict=True)
    assert report.unexpected == [] and report.missing == []
    own = fresh.state_dict()
    for key, value in lavis_state.items():  # GPT-2 is mm's `gpt` sub-module; the video layers keep their names
        name = f"gpt.{key}" if key.startswith(("transformer.", "lm_head.")) else key
        assert torch.equal(own[name], value), key
    expected_names = {f"gpt.{k}" if k.startswith(("transformer.", "lm_head.")) else k for k in lavis_state}
    assert {k for k in own if not k.endswith((".attn.bias", ".attn.masked_bias"))} == expected_names
