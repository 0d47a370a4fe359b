"""A Hugging Face Blip2 layout (vision_model.*, qformer.*, query_tokens) loads by key mapping."""

from __future__ import annotations

import torch
from safetensors.torch import save_file
from transformers import Blip2QFormerConfig, Blip2QFormerModel, Blip2VisionConfig, Blip2VisionModel

from mm_blip2.checkpoints import load_hf_checkpoint

from .test_lavis_checkpoint import tiny_extractor


def test_hf_blip2_directory(tmp_path):
    torch.manual_seed(0)
    vision = Blip2VisionModel(Blip2VisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=28,
        patch_size=14, layer_norm_eps=1e-6, qkv_bias=True)).eval()  # EVA blocks: 1e-6
    qformer = Blip2QFormerModel(Blip2QFormerConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=142,
        max_position_embeddings=64, cross_attention_frequency=2, encoder_hidden_size=32)).eval()
    with torch.no_grad():
        for p in [*vision.parameters(), *qformer.parameters()]:
            p.add_(0.1 * torch.randn_like(p))  # no parameter left at its 0/1 default
    query_tokens = torch.randn(1, 4, 32)
    state = {f"vision_model.{k}": v for k, v in vision.state_dict().items()}
    state.update({f"qformer.{k}": v for k, v in qformer.state_dict().items()})
    state["query_tokens"] = query_tokens
    state["language_model.lm_head.weight"] = torch.zeros(8, 8)
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "model.safetensors"))

    model = tiny_extractor()
    report = load_hf_checkpoint(model, str(tmp_path))
    assert report.unexpected == [] and "language_model.lm_head.weight" in report.ignored
    # The text branch and ITC projections are not in a Blip2Model checkpoint; everything else is.
    assert all(k.startswith(("text_embeddings.", "vision_proj.", "text_proj.")) or ".intermediate." in k
               or ".output." in k for k in report.missing)
    image = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        # post_layernorm is LAVIS' ln_vision, whose eps is 1e-5 (HF configs use one eps for all norms).
        blocks_out = vision(pixel_values=image, output_hidden_states=True).hidden_states[-1]
        ln = vision.post_layernorm
        expected_vit = torch.nn.functional.layer_norm(blocks_out, (32,), ln.weight, ln.bias, eps=1e-5)
        torch.testing.assert_close(model.encode_image(image), expected_vit, atol=1e-5, rtol=0)
        expected_q = qformer(query_embeds=query_tokens.expand(2, -1, -1), encoder_hidden_states=expected_vit,
                             encoder_attention_mask=torch.ones(expected_vit.shape[:2], dtype=torch.long)).last_hidden_state
        torch.testing.assert_close(model.query_image(image)[0], expected_q, atol=1e-5, rtol=0)
