"""LAVIS' BLIP files as LAVIS ships them: what is read, what is ignored by design, what is an error."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from mm_core.errors import CheckpointError, ConfigError
from tests.blip.conftest import build_tiny


def save_lavis(path, state):
    torch.save({"model": state, "optimizer": {}, "epoch": 3}, path)  # a LAVIS runner's checkpoint layout
    return str(path)


def lavis_retrieval_state(lavis_state: dict, queue_size: int = 32) -> dict:
    """``lavis_state`` plus what LAVIS' ``BlipRetrieval`` saves: momentum copies (values unlike the
    online parts'), the queues, their ids and BLIP's ``ptr_queue``."""
    generator = torch.Generator().manual_seed(3)
    online = ("visual_encoder.", "text_encoder.", "vision_proj.", "text_proj.")
    momentum = {k.replace(".", "_m.", 1): v + 0.01 * torch.randn(v.shape, generator=generator)
                for k, v in lavis_state.items() if k.startswith(online) and v.is_floating_point()}
    queues = {"image_queue": torch.nn.functional.normalize(torch.randn(16, queue_size, generator=generator), dim=0),
              "text_queue": torch.nn.functional.normalize(torch.randn(16, queue_size, generator=generator), dim=0),
              "idx_queue": torch.arange(queue_size).view(1, -1) * 3, "ptr_queue": torch.tensor([8])}
    return {**lavis_state, **momentum, **queues}


def test_momentum_encoders_and_queues_fill_blip_retrieval(lavis_state, tmp_path):
    from mm_blip.checkpoints import load_checkpoint_file

    state = lavis_retrieval_state(lavis_state)
    path = save_lavis(tmp_path / "blip_coco_retrieval.pth", state)
    model = build_tiny("blip_retrieval")
    report = load_checkpoint_file(model, path)
    assert report.unexpected == [] and report.missing == ["distill_step"]  # mm's own step count only
    assert "text_encoder.embeddings.position_ids" in report.ignored
    assert {k for k in report.ignored if k.startswith("text_decoder.")}  # the captioner's part: not this arch's
    assert not {k for k in report.ignored if "_m." in k or "queue" in k}
    own = model.state_dict()
    torch.testing.assert_close(own["vision_model_m.embeddings.class_embedding"], state["visual_encoder_m.cls_token"])
    torch.testing.assert_close(own["vision_model_m.encoder.layers.1.self_attn.projection.weight"],
                               state["visual_encoder_m.blocks.1.attn.proj.weight"])
    for key in ("text_encoder_m.encoder.layer.1.crossattention.self.query.weight", "vision_proj_m.weight",
                "text_proj_m.bias", "image_queue", "text_queue", "idx_queue"):
        torch.testing.assert_close(own[key], state[key].to(own[key].dtype), msg=key)
    assert int(model.queue_ptr) == 8
    assert not torch.equal(own["vision_proj_m.weight"], own["vision_proj.weight"])

    built = build_tiny("blip_retrieval", load_finetuned=True, finetuned=path)  # LAVIS' from_config
    assert int(built.queue_ptr) == 0  # reset after loading, as LAVIS does
    torch.testing.assert_close(built.text_queue, state["text_queue"])
    torch.testing.assert_close(built.text_proj_m.weight, state["text_proj_m.weight"])
    sources = built.weight_sources.sources
    assert sources["vision_model_m.embeddings.class_embedding"] == sources["image_queue"] == path


def test_other_archs_ignore_the_momentum_parts_and_a_file_without_them_is_copied(lavis_state, tmp_path):
    from mm_blip.checkpoints import load_checkpoint_file

    state = lavis_retrieval_state(lavis_state)
    path = save_lavis(tmp_path / "blip_coco_retrieval.pth", state)
    report = load_checkpoint_file(build_tiny("blip_image_text_matching"), path)
    extra = set(state) - set(lavis_state)
    assert extra <= set(report.ignored) and report.unexpected == [] and report.missing == []

    plain = build_tiny("blip_retrieval", load_finetuned=True, finetuned=save_lavis(tmp_path / "plain.pth", lavis_state))
    torch.testing.assert_close(plain.vision_model_m.embeddings.class_embedding, lavis_state["visual_encoder.cls_token"])
    torch.testing.assert_close(plain.text_proj_m.weight, lavis_state["text_proj.weight"])
    assert plain.weight_sources.sources["text_proj_m.weight"].startswith("fresh: a copy of text_proj")
    assert (plain.idx_queue == -100).all() and torch.allclose(plain.image_queue.norm(dim=0), torch.ones(32))

    with pytest.raises(CheckpointError, match="image_queue") as info:
        build_tiny("blip_retrieval", queue_size=64, load_finetuned=True, finetuned=path)
    assert "model.queue_size must equal the file's queue length (32)" in info.value.hint


def test_every_key_of_the_table_lands_on_a_transformers_name(lavis_state):
    from mm_blip.checkpoints import lavis_to_mm

    model = build_tiny("blip_vqa")
    own = set(model.state_dict())
    mapped = {lavis_to_mm(k) for k in lavis_state if not k.endswith("position_ids")}
    vqa_parts = {m for m in mapped if m.split(".")[0] in ("vision_model", "text_encoder", "text_decoder")}
    assert vqa_parts == own  # every tensor of the model, each from exactly one LAVIS key
    assert lavis_to_mm("visual_encoder.blocks.11.attn.proj.weight") == \
        "vision_model.encoder.layers.11.self_attn.projection.weight"
    assert lavis_to_mm("visual_encoder.norm.bias") == "vision_model.post_layernorm.bias"


def test_a_file_without_a_part_is_an_error_naming_it(lavis_state, tmp_path):
    caption_only = {k: v for k, v in lavis_state.items() if k.startswith(("visual_encoder.", "text_decoder."))}
    path = save_lavis(tmp_path / "blip_coco_caption_base.pth", caption_only)
    with pytest.raises(CheckpointError) as info:
        build_tiny("blip_vqa", load_finetuned=True, finetuned=path)
    assert "text_encoder:" in str(info.value) and "text_decoder" not in str(info.value).split("files read")[0]
    assert "model.allow_random_init" in info.value.hint
    model = build_tiny("blip_vqa", load_finetuned=True, finetuned=path, allow_random_init=["text_encoder"])
    assert any(r["module"] == "text_encoder" and "allow_random_init" in r["source"]
               for r in model.weight_sources.table(model.state_dict()))


def test_unknown_keys_under_a_part_are_reported_and_another_models_file_refused(lavis_state, tmp_path):
    from mm_blip.checkpoints import load_checkpoint_file

    path = save_lavis(tmp_path / "odd.pth", {**lavis_state, "text_encoder.encoder.layer.7.output.dense.weight":
                                             torch.zeros(32, 64)})
    report = load_checkpoint_file(build_tiny("blip_image_text_matching"), path)
    assert report.unexpected == ["text_encoder.encoder.layer.7.output.dense.weight"]
    blip2 = save_lavis(tmp_path / "blip2_pretrained.pth", {"Qformer.bert.embeddings.word_embeddings.weight":
                                                           torch.zeros(4, 4), "query_tokens": torch.zeros(1, 2, 4)})
    with pytest.raises(CheckpointError, match="fills no tensor"):
        build_tiny("blip_caption", load_finetuned=True, finetuned=blip2)


def test_position_embedding_is_resized_for_another_image_size(lavis_state, tmp_path):
    path = save_lavis(tmp_path / "model_base_capfilt_large.pth", lavis_state)  # made at 32 px: 4x4 patches
    model = build_tiny("blip_vqa", image_size=48, load_pretrained=True, pretrained=path)  # 6x6 patches
    pos = model.vision_model.embeddings.position_embedding.detach()
    original = lavis_state["visual_encoder.pos_embed"]
    assert pos.shape == (1, 37, 32)
    torch.testing.assert_close(pos[:, :1], original[:, :1])  # [CLS] keeps its position
    grid = original[:, 1:].reshape(1, 4, 4, 32).permute(0, 3, 1, 2)
    expected = torch.nn.functional.interpolate(grid, size=(6, 6), mode="bicubic", align_corners=False)
    torch.testing.assert_close(pos[:, 1:], expected.permute(0, 2, 3, 1).reshape(1, 36, 32))
    with torch.no_grad():
        assert model.encode_image(torch.randn(1, 3, 48, 48)).shape == (1, 37, 32)


def test_lavis_loading_order_and_plan(tmp_path, monkeypatch):
    from mm_blip.checkpoints import plan, weight_files
    from mm_core.config.loader import load_model_defaults

    base_coco = load_model_defaults("blip_caption", "base_coco").model
    assert [k for k, _ in weight_files(base_coco)] == ["finetuned"]  # instead of pretrained, as LAVIS
    assert weight_files(base_coco)[0][1].endswith("/LAVIS/models/BLIP/blip_coco_caption_base.pth")
    own = OmegaConf.merge(base_coco, {"load_finetuned": False})
    assert weight_files(own)[0][1].endswith("/BLIP/models/model_base_capfilt_large.pth")
    monkeypatch.setenv("MM_CACHE_ROOT", str(tmp_path))
    assert plan(base_coco)[0][1].endswith(f"[will download: {tmp_path / 'downloads' / 'blip_coco_caption_base.pth'}]")
    (tmp_path / "downloads").mkdir()
    (tmp_path / "downloads" / "blip_coco_caption_base.pth").write_bytes(b"")
    assert "[present: " in plan(base_coco)[0][1]
    assert weight_files(load_model_defaults("blip_caption", "tiny").model) == []
    with pytest.raises(ConfigError, match="model.finetuned"):
        weight_files(OmegaConf.merge(base_coco, {"finetuned": None}))


@pytest.mark.parametrize("arch", ["blip_caption", "blip_vqa", "blip_feature_extractor", "blip_retrieval",
                                  "blip_image_text_matching"])
def test_info_tells_what_each_model_type_is(arch, capsys):
    from mm_core.cli.main import main
    from mm_core.registry import get_registry

    assert main(["info", arch]) == 0
    out = capsys.readouterr().out
    for model_type in get_registry().model_types(arch):
        row = next((line for line in out.splitlines() if line.startswith(f"| `{model_type}` |")), None)
        assert row is not None, f"mmrun info {arch} has no row for model type {model_type}"
        assert "LAVIS" in row or model_type == "tiny" or ".pth" in row


def test_bad_options_and_inputs_are_named():
    from mm_core.errors import DataError

    with pytest.raises(ConfigError, match="model.vit_type must be one of base, large, not 'huge'"):
        build_tiny("blip_caption", vit_type="huge")
    with pytest.raises(ConfigError, match="model.med_config_path 'nowhere/med.json' is not a file"):
        build_tiny("blip_caption", med_config_path="nowhere/med.json")
    with pytest.raises(ConfigError, match="smaller than the tokenizer"):
        build_tiny("blip_caption", text={"vocab_size": 50})
    with pytest.raises(DataError, match="takes 32x32 images") as info:
        build_tiny("blip_caption").generate({"image": torch.zeros(1, 3, 64, 64)})
    assert "image_size: 32" in info.value.hint
    with pytest.raises(DataError, match="samples\\['n_answers'\\]"):
        build_tiny("blip_vqa")({"image": torch.zeros(1, 3, 32, 32), "text_input": ["what"], "answer": ["x"],
                                "weight": torch.ones(1)})
