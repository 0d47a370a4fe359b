"""Weights as upstream ships and writes them, loaded in each arch's order and checked numerically
against an independent forward pass; coverage stops a build that would keep a part random.

Files are built here from tiny models, laid out as upstream writes them: LAVIS' ``eva_vit_g.pth``
(bare EVA keys), a BLIP-2 checkpoint saved by LAVIS' runner with a frozen tower (no
``visual_encoder.*``), MiniGPT4-Qwen's ``model.pth`` (``pipe_proj2pth.py``: ``llm_proj.*`` only) and
runner ``checkpoint_*.pth`` (``{"model", "optimizer", "config", "scaler", "epoch"}``),
``unfreeze_llm_model.pth`` (``pipemodel2pth.py``: ``llm_proj.*`` + ``llm_model.*``) and the
``deepspeed2pth.py`` ``model.pth`` (the whole module's state dict)."""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import lavis_reference as ref
import pytest
import torch
from omegaconf import OmegaConf

from mm_core.config.loader import load_model_defaults
from mm_core.errors import CheckpointError, ConfigError
from mm_core.registry import get_registry
from mm_core.weights import WeightSources, report_weights

TOWER = [k for k in ref.lavis_state_dict() if k.startswith("visual_encoder.")]
#: the tiny minigpt4qwen with lavis_reference's dimensions (28 px, patch 14, Q-Former every 2nd layer)
REF_DIMS = {
    "image_size": 28, "num_query_token": 4, "cross_attention_freq": 2,
    "vision": {"embed_dim": 32, "depth": 2, "num_heads": 2, "patch_size": 14, "mlp_ratio": 2.0},
    "qformer": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
                "vocab_size": 142, "max_position_embeddings": 64},
}


def build(arch: str, **overrides):
    cfg = load_model_defaults(arch, "tiny").model
    cfg = OmegaConf.merge(cfg, REF_DIMS if arch == "minigpt4qwen" else {}, overrides)
    return get_registry().resolve("models", arch).from_config(cfg).eval()


@pytest.fixture
def upstream(tmp_path, monkeypatch):
    """A cache root laid out as MiniGPT4-Qwen's (``ckpt/eva``, ``ckpt/blip2``) plus the stage files."""
    monkeypatch.setenv("MM_CACHE_ROOT", str(tmp_path))
    sd = ref.lavis_state_dict(seed=7)
    (tmp_path / "ckpt" / "eva").mkdir(parents=True)
    (tmp_path / "ckpt" / "blip2").mkdir(parents=True)
    torch.save({k[len("visual_encoder."):]: sd[k] for k in TOWER}, tmp_path / "ckpt/eva/eva_vit_g.pth")
    blip2 = {k: v for k, v in sd.items() if not k.startswith("visual_encoder.")}  # frozen tower not saved
    torch.save({"model": blip2}, tmp_path / "ckpt/blip2/blip2_pretrained_flant5xxl.pth")
    return tmp_path, sd


def llm_proj_file(model, seed: int) -> OrderedDict:
    g = torch.Generator().manual_seed(seed)
    out, inp = model.llm_proj.weight.shape
    return OrderedDict([("llm_proj.weight", 0.3 * torch.randn(out, inp, generator=g)),
                        ("llm_proj.bias", 0.1 * torch.randn(out, generator=g))])


def expected_image_tokens(sd: dict, proj: dict, image: torch.Tensor) -> torch.Tensor:
    """Independent forward: LAVIS' EVA + Q-Former (lavis_reference) then the projection."""
    queries = ref.qformer(sd, image_embeds=ref.vision(sd, image))
    return queries @ proj["llm_proj.weight"].T + proj["llm_proj.bias"]


PAPER = {"vit_pretrained": "ckpt/eva/eva_vit_g.pth", "pretrained": "ckpt/blip2/blip2_pretrained_flant5xxl.pth",
         "load_pretrained": True}


def test_minigpt4qwen_eva_then_blip2_then_model_pth(upstream):
    """MiniGPT4-Qwen's SFT order: both flags set -> pretrained, then the stage's model.pth."""
    root, sd = upstream
    probe = build("minigpt4qwen", allow_random_init=True)
    proj = llm_proj_file(probe, seed=3)
    torch.save(proj, root / "model.pth")  # pipe_proj2pth.py: a plain dict of llm_proj.* only
    model = build("minigpt4qwen", **PAPER, load_finetuned=True, finetuned=str(root / "model.pth"))
    image = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_images(image), expected_image_tokens(sd, proj, image),
                                   atol=1e-5, rtol=0)
    sources = model.weight_sources.sources
    assert sources["visual_encoder.blocks.0.attn.qkv.weight"].endswith("ckpt/eva/eva_vit_g.pth")
    assert sources["qformer.encoder.layer.0.crossattention.attention.query.weight"].endswith("flant5xxl.pth")
    assert sources["llm_proj.weight"] == str(root / "model.pth")
    assert sources["llm.model.lm_head.weight"].startswith("fresh: LLM built with random_init")


def test_minigpt4qwen_later_file_overrides_key_by_key(upstream):
    """A MiniGPT4-Qwen runner checkpoint_*.pth (trainable tensors + optimizer state) after the BLIP-2
    file: its query_tokens win, the BLIP-2 Q-Former stays."""
    root, sd = upstream
    probe = build("minigpt4qwen", allow_random_init=True)
    proj = llm_proj_file(probe, seed=4)
    queries = torch.randn(1, 4, 32)
    torch.save({"model": {**proj, "query_tokens": queries}, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]},
                "config": {"run": {"task": "image_text_pretrain"}}, "scaler": None, "epoch": 2},
               root / "checkpoint_2.pth")
    model = build("minigpt4qwen", **PAPER, load_finetuned=True, finetuned=str(root / "checkpoint_2.pth"))
    image = torch.randn(1, 3, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_images(image),
                                   expected_image_tokens({**sd, "query_tokens": queries}, proj, image), atol=1e-5, rtol=0)
    assert model.weight_sources.files[-1] == str(root / "checkpoint_2.pth")


def test_unfreeze_llm_model_pth_replaces_the_llm(upstream):
    """pipemodel2pth.py's unfreeze_llm_model.pth: llm_proj + the whole LLM under llm_model.*; the
    LLM then computes what transformers' own class computes with those tensors."""
    root, sd = upstream
    probe = build("minigpt4qwen", allow_random_init=True)
    config = probe.llm.model.config
    torch.manual_seed(11)
    trained_llm = type(probe.llm.model)(config)  # another LLM, as SFT with freeze_llm: false leaves it
    proj = llm_proj_file(probe, seed=5)
    torch.save({**proj, **{f"llm_model.{k}": v for k, v in trained_llm.state_dict().items()}},
               root / "unfreeze_llm_model.pth")
    model = build("minigpt4qwen", **PAPER, load_finetuned=True, finetuned=str(root / "unfreeze_llm_model.pth"))
    reference = type(probe.llm.model)(config).eval()
    reference.load_state_dict(trained_llm.state_dict())
    ids = torch.tensor([[1, 5, 9, 2, 7]])
    with torch.no_grad():
        torch.testing.assert_close(model.llm.model(input_ids=ids).logits, reference(input_ids=ids).logits)
        assert not torch.allclose(probe.llm.model(input_ids=ids).logits, reference(input_ids=ids).logits)
        image = torch.randn(1, 3, 28, 28)
        torch.testing.assert_close(model.encode_images(image), expected_image_tokens(sd, proj, image), atol=1e-5, rtol=0)
    assert {s for k, s in model.weight_sources.sources.items() if k.startswith("llm.")} == \
        {str(root / "unfreeze_llm_model.pth")}


def test_deepspeed2pth_model_pth_alone_fills_everything(upstream):
    """deepspeed2pth.py saves the whole module (MiniGPT4-Qwen's names): one finetuned file suffices."""
    root, sd = upstream
    probe = build("minigpt4qwen", allow_random_init=True)
    proj = llm_proj_file(probe, seed=6)
    no_text_branch = {k: v for k, v in sd.items() if not k.startswith(("Qformer.cls", "itm_head", "vision_proj",
                                                                        "text_proj", "temp"))}
    llm = {f"llm_model.{k}": v for k, v in probe.llm.model.state_dict().items()}
    torch.save({**no_text_branch, **proj, **llm}, root / "model.pth")
    model = build("minigpt4qwen", load_finetuned=True, load_pretrained=False, finetuned=str(root / "model.pth"))
    assert model.weight_sources.files == [str(root / "model.pth")]
    image = torch.randn(1, 3, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_images(image), expected_image_tokens(sd, proj, image), atol=1e-5, rtol=0)


def test_lavis_arch_reads_finetuned_instead_of_pretrained(upstream):
    """LAVIS' order: with load_finetuned the finetuned file (here a LAVIS runner checkpoint_best.pth
    without the frozen tower) replaces pretrained, which is not even opened."""
    root, sd = upstream
    torch.save({"model": {k: v for k, v in sd.items() if k not in TOWER}, "optimizer": {"state": {}},
                "config": {}, "scaler": None, "epoch": 4}, root / "checkpoint_best.pth")
    model = build("blip2_feature_extractor", vit_pretrained="ckpt/eva/eva_vit_g.pth", load_pretrained=True,
                  pretrained=str(root / "does_not_exist.pth"), load_finetuned=True,
                  finetuned=str(root / "checkpoint_best.pth"))
    image = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        expected = ref.qformer(sd, image_embeds=ref.vision(sd, image))
        torch.testing.assert_close(model.extract_features({"image": image}, mode="image").image_embeds, expected,
                                   atol=1e-5, rtol=0)
    assert [Path(f).name for f in model.weight_sources.files] == ["eva_vit_g.pth", "checkpoint_best.pth"]


def test_a_missing_tower_stops_the_build_naming_the_module(upstream):
    root, _ = upstream
    with pytest.raises(CheckpointError) as err:
        build("minigpt4qwen", **{**PAPER, "vit_pretrained": None})
    text = str(err.value)
    assert f"visual_encoder: {len(TOWER)} tensors" in text and "ln_vision" not in text.split("files read")[0]
    assert str(root / "ckpt/blip2/blip2_pretrained_flant5xxl.pth") in text and "model.vit_pretrained" in text
    assert "model.allow_random_init" in text
    model = build("minigpt4qwen", **{**PAPER, "vit_pretrained": None}, allow_random_init=["visual_encoder"])
    assert model.weight_sources.sources["visual_encoder.cls_token"] == "fresh: model.allow_random_init"


def test_a_stage_file_alone_does_not_fill_the_qformer(upstream):
    """Only finetuned (llm_proj) + the tower: LAVIS/MiniGPT4-Qwen would run with a random Q-Former."""
    root, _ = upstream
    probe = build("minigpt4qwen", allow_random_init=True)
    torch.save(llm_proj_file(probe, 1), root / "model.pth")
    with pytest.raises(CheckpointError) as err:
        build("minigpt4qwen", vit_pretrained="ckpt/eva/eva_vit_g.pth", load_pretrained=False,
              load_finetuned=True, finetuned=str(root / "model.pth"))
    for module in ("ln_vision: 2 tensors", "qformer:", "query_tokens: 1 tensor"):
        assert module in str(err.value)
    assert "model.pretrained" in str(err.value)


def test_tiny_types_naming_no_file_are_random_by_design(tmp_path):
    for arch in ("minigpt4qwen", "blip2_feature_extractor"):
        model = get_registry().resolve("models", arch).from_pretrained("tiny")
        assert model.weight_sources.files == []
        assert all(s.startswith("fresh: ") for s in model.weight_sources.sources.values())
    report_weights(model, tmp_path)
    written = json.loads((tmp_path / "weights.json").read_text())
    assert {r["module"] for r in written["modules"]} >= {"visual_encoder", "qformer", "query_tokens"}


def test_file_that_fills_nothing_is_an_error(upstream):
    root, _ = upstream
    torch.save({"other.weight": torch.zeros(2)}, root / "foreign.pth")
    with pytest.raises(CheckpointError, match="fills no tensor"):
        build("minigpt4qwen", **PAPER, load_finetuned=True, finetuned=str(root / "foreign.pth"))
    with pytest.raises(ConfigError, match="load_finetuned is true but model.finetuned names no file"):
        build("minigpt4qwen", **PAPER, load_finetuned=True, finetuned="")


def test_missing_cache_file_is_downloaded_from_its_url(upstream):
    """MiniGPT4-Qwen reads ckpt/eva/eva_vit_g.pth under its cache root, else downloads the URL:
    here the URL is a local file, fetched by the core's atomic download into that path."""
    root, sd = upstream
    elsewhere = root / "mirror" / "eva_vit_g.pth"
    elsewhere.parent.mkdir()
    (root / "ckpt/eva/eva_vit_g.pth").rename(elsewhere)
    model = build("minigpt4qwen", **{**PAPER, "vit_pretrained_url": elsewhere.as_uri()}, allow_random_init=["llm_proj"])
    assert (root / "ckpt/eva/eva_vit_g.pth").is_file()
    torch.testing.assert_close(model.visual_encoder.pos_embed.data, sd["visual_encoder.pos_embed"])


@pytest.mark.parametrize("arch", ["minigpt4qwen", "blip2_feature_extractor"])
def test_every_real_model_type_names_the_eva_weights(arch):
    registry = get_registry()
    cls = registry.resolve("models", arch)
    for model_type in set(registry.model_types(arch)) - {"tiny"}:
        cfg = load_model_defaults(arch, model_type).model
        plan = cls.weights_plan(cfg)
        assert plan[0][0].startswith("visual_encoder (vit_pretrained)"), (model_type, plan)
        url = cfg.get("vit_pretrained_url") or cfg.vit_pretrained
        assert url == "https://storage.googleapis.com/sfr-vision-language-research/LAVIS/models/BLIP2/eva_vit_g.pth"
        assert any("(pretrained)" in row[0] or "(finetuned)" in row[0] for row in plan), (model_type, plan)


def test_dry_run_prints_the_weights_plan(tmp_path, monkeypatch, capsys):
    from mm_core.cli.dry_run import print_plan
    from mm_core.config.loader import load_config

    monkeypatch.setenv("MM_CACHE_ROOT", str(tmp_path))
    path = tmp_path / "run.yaml"
    path.write_text("model:\n  arch: minigpt4qwen\n  model_type: qwen7b_chat\n  load_finetuned: true\n"
                    "  finetuned: out/global_step2181/model.pth\nrun:\n  task: image_text_pretrain\n")
    assert print_plan(load_config(str(path))) == 0
    out = capsys.readouterr().out
    eva = tmp_path / "ckpt/eva/eva_vit_g.pth"
    assert f"weights: visual_encoder (vit_pretrained) <- {eva} [will download https://" in out
    assert "(pretrained) <- " in out and "(finetuned) <- " in out and f"{tmp_path / 'out'}" in out
    lines = [line for line in out.splitlines() if "weights:" in line]
    assert [("vit_pretrained" in x, "(pretrained)" in x, "(finetuned)" in x) for x in lines[:3]] == \
        [(True, False, False), (False, True, False), (False, False, True)]  # MiniGPT4-Qwen's order


def test_coverage_record_check_unit():
    sources = WeightSources()
    sources.loaded(["a.x", "a.y"], "f1")
    sources.loaded(["a.y", "b.z"], "f2")  # the later file wins key by key
    sources.fresh(["c.w"], "new")
    assert sources.sources == {"a.x": "f1", "a.y": "f2", "b.z": "f2", "c.w": "fresh: new"}
    keys = ["a.x", "a.y", "b.z", "c.w", "d.q", "d.r", "e"]
    with pytest.raises(CheckpointError, match=r"d: 2 tensors\n  e: 1 tensor\n  files read: f1, f2"):
        sources.check(keys, hints={"d": "model.d_file"})
    sources.check(keys, allow=["d", "e"])
    assert sorted((r["module"], r["source"], r["tensors"]) for r in sources.table(keys))[-3:] == [
        ("c", "fresh: new", 1), ("d", "fresh: model.allow_random_init", 2), ("e", "fresh: model.allow_random_init", 1)]


def qwen_directory(path: Path, drop: str | None = None) -> Path:
    """The tiny Qwen2 saved as a Hugging Face directory (safetensors), optionally without one tensor."""
    from safetensors.torch import load_file, save_file

    probe = build("minigpt4qwen", allow_random_init=True)
    probe.llm.model.save_pretrained(path)
    probe.llm.tokenizer.save_pretrained(path)
    if drop is not None:
        weights = load_file(str(path / "model.safetensors"))
        save_file({k: v for k, v in weights.items() if k != drop}, str(path / "model.safetensors"),
                  metadata={"format": "pt"})
    return path


def test_an_llm_directory_missing_a_tensor_stops_the_build_naming_it(upstream):
    """transformers fills a tensor its files lack with random values and only warns; coverage stops."""
    root, _ = upstream
    complete = qwen_directory(root / "qwen_complete")
    model = build("minigpt4qwen", **PAPER, llm_model=str(complete), llm_random_init=False)
    assert model.weight_sources.sources["llm.model.model.norm.weight"] == f"{complete} (LLM backend qwen)"
    partial = qwen_directory(root / "qwen_partial", drop="model.norm.weight")
    with pytest.raises(CheckpointError) as err:
        build("minigpt4qwen", **PAPER, llm_model=str(partial), llm_random_init=False)
    assert "llm: 1 tensor" in str(err.value) and "model.allow_random_init" in str(err.value)


def test_an_llm_saved_without_adapters_loads_into_a_model_built_with_lora(upstream):
    """MiniGPT4-Qwen's plain ``llm_model.*`` names reach peft's wrapped layers (``base_model.model.``,
    ``.base_layer``); the new adapters start at zero, so the LLM computes what the file's weights compute."""
    root, _ = upstream
    probe = build("minigpt4qwen", allow_random_init=True)
    torch.manual_seed(12)
    trained_llm = type(probe.llm.model)(probe.llm.model.config)
    torch.save({**llm_proj_file(probe, seed=6), **{f"llm_model.{k}": v for k, v in trained_llm.state_dict().items()}},
               root / "unfreeze_llm_model.pth")
    model = build("minigpt4qwen", **PAPER, load_finetuned=True, finetuned=str(root / "unfreeze_llm_model.pth"),
                  get_lora=True)
    wrapped = [k for k in model.weight_sources.sources if ".base_layer." in k]
    assert wrapped and all(model.weight_sources.sources[k] == str(root / "unfreeze_llm_model.pth") for k in wrapped)
    ids = torch.tensor([[1, 5, 9, 2, 7]])
    with torch.no_grad():
        torch.testing.assert_close(model.llm.model(input_ids=ids).logits, trained_llm.eval()(input_ids=ids).logits)
