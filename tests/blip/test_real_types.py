"""The seed's three one-liners with the real model types, offline: LAVIS' files are placed where mm's
download of their URLs would put them (``<cache root>/downloads/<file name>``), at the real types' full
dimensions and in LAVIS' key names (``{"model": state_dict}``, fp16 to keep the test's disk use
small), and bert-base-uncased's tokenizer files where the Hugging Face hub cache keeps them. Each
one-liner then runs in a fresh ``python`` exactly as the seed writes it."""

from __future__ import annotations

import json
import re
import string
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import mm_env

pytestmark = pytest.mark.slow

#: mm / transformers name -> LAVIS name (written from LAVIS' VisionTransformer; the inverse of the plugin's table).
TO_LAVIS = [
    (r"^vision_model\.embeddings\.class_embedding$", "visual_encoder.cls_token"),
    (r"^vision_model\.embeddings\.position_embedding$", "visual_encoder.pos_embed"),
    (r"^vision_model\.embeddings\.patch_embedding\.", "visual_encoder.patch_embed.proj."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.layer_norm1\.", r"visual_encoder.blocks.\1.norm1."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.layer_norm2\.", r"visual_encoder.blocks.\1.norm2."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.self_attn\.projection\.", r"visual_encoder.blocks.\1.attn.proj."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.self_attn\.qkv\.", r"visual_encoder.blocks.\1.attn.qkv."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.mlp\.", r"visual_encoder.blocks.\1.mlp."),
    (r"^vision_model\.post_layernorm\.", "visual_encoder.norm."),
]

ONE_LINERS = {
    "blip_caption/base_coco": ("blip_coco_caption_base.pth", """
model, vis_processors, _ = load_model_and_preprocess(name="blip_caption", model_type="base_coco", is_eval=True)
image = vis_processors["eval"](raw_image).unsqueeze(0)
out = model.generate({"image": image})
assert len(out) == 1 and isinstance(out[0], str), out
assert image.shape == (1, 3, 384, 384)
"""),
    "blip_vqa/vqav2": ("model_base_vqa_capfilt_large.pth", """
model, vis_processors, txt_processors = load_model_and_preprocess(name="blip_vqa", model_type="vqav2", is_eval=True)
image = vis_processors["eval"](raw_image).unsqueeze(0)
question = txt_processors["eval"]("Which city is this photo taken?")
out = model.predict_answers(samples={"image": image, "text_input": question}, inference_method="generate")
assert len(out) == 1 and isinstance(out[0], str), out
assert image.shape == (1, 3, 480, 480)
"""),
    "blip_feature_extractor/base": ("model_base_capfilt_large.pth", """
model, vis_processors, txt_processors = load_model_and_preprocess(name="blip_feature_extractor", model_type="base", is_eval=True)
image = vis_processors["eval"](raw_image).unsqueeze(0)
text_input = txt_processors["eval"]("a large fountain spewing water into the air")
sample = {"image": image, "text_input": [text_input]}
features_multimodal = model.extract_features(sample)
features_image = model.extract_features(sample, mode="image")
features_text = model.extract_features(sample, mode="text")
assert features_multimodal.multimodal_embeds.shape[-1] == 768
assert features_image.image_embeds_proj.shape == (1, 197, 256), features_image.image_embeds_proj.shape
similarity = features_image.image_embeds_proj[:, 0, :] @ features_text.text_embeds_proj[:, 0, :].t()
assert similarity.shape == (1, 1)
"""),
}


def to_lavis(key: str) -> str:
    for pattern, target in TO_LAVIS:
        if re.search(pattern, key):
            return re.sub(pattern, target, key)
    return key


def write_bert_tokenizer(hf_home: Path) -> None:
    """bert-base-uncased's tokenizer files (a 30522-entry vocabulary with BERT's special-token ids) in the hub cache."""
    commit = "0" * 40
    repo = hf_home / "hub" / "models--bert-base-uncased"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    words = "a picture of large fountain spewing water into the air which city is this photo taken".split()
    vocab = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab += chars + ["##" + c for c in chars] + sorted(set(words) - set(chars))
    vocab += [f"[filler{i}]" for i in range(30522 - len(vocab))]
    (snapshot / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (snapshot / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, "model_max_length": 512,
                                                                "tokenizer_class": "BertTokenizer"}))
    (snapshot / "config.json").write_text(json.dumps({"model_type": "bert"}))


def write_lavis_file(arch: str, model_type: str, path: Path) -> None:
    """A checkpoint of the real type's dimensions in LAVIS' names, as LAVIS ships it. Its tensors are
    views of one random buffer (what the test checks is the layout, names and dimensions, not the
    values), so the file stays small; the shapes come from the model built on the meta device."""
    from mm_core.config.loader import load_model_defaults
    from mm_core.registry import get_registry

    cfg = load_model_defaults(arch, model_type).model
    cfg.load_finetuned, cfg.load_pretrained = False, False
    cfg.tokenizer, cfg.text = "tiny", {"vocab_size": 30524}  # the tiny tokenizer only sizes the meta model
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in get_registry().resolve("models", arch)(cfg).state_dict().items()}
    largest = max(s.numel() for s in shapes.values())
    buffer = (0.02 * torch.randn(largest, generator=torch.Generator().manual_seed(0))).half()  # ONE storage
    state = {to_lavis(k): buffer[:shape.numel()].view(shape) for k, shape in shapes.items()
             if not k.endswith("position_ids")}
    torch.save({"model": state}, path)
    assert path.stat().st_size < 4 * buffer.numel(), "the views must share the buffer's storage"


@pytest.mark.parametrize("name", sorted(ONE_LINERS))
def test_seed_one_liner_with_the_real_type(name, tmp_path):
    arch, model_type = name.split("/")
    file_name, code = ONE_LINERS[name]
    write_bert_tokenizer(tmp_path / "hf")
    (tmp_path / "cache" / "downloads").mkdir(parents=True)
    write_lavis_file(arch, model_type, tmp_path / "cache" / "downloads" / file_name)
    script = ("from PIL import Image\nfrom mm_core.api import load_model_and_preprocess\n"
              "raw_image = Image.new('RGB', (640, 480), (30, 120, 200))\n" + code +
              "assert model.weight_sources.files == [str(__import__('pathlib').Path("
              f"{str(tmp_path / 'cache' / 'downloads' / file_name)!r}))], model.weight_sources.files\n"
              "assert (model.tokenizer.bos_token_id, model.tokenizer.enc_token_id) == (30522, 30523)\n"
              "print('OK')\n")
    env = mm_env(HF_HOME=str(tmp_path / "hf"), MM_CACHE_ROOT=str(tmp_path / "cache"), OMP_NUM_THREADS="2")
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and done.stdout.strip().endswith("OK"), done.stderr[-3000:]
