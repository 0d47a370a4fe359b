"""An independent BLIP-2 forward pass on a LAVIS-layout state dict, written with plain tensor
ops from LAVIS' documented computation (EVA blocks -> LayerNorm(1e-5) -> BERT-style Q-Former
whose queries use their own FFN). It imports neither timm nor transformers."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

DIMS = dict(D=32, depth=2, vit_heads=2, patch=14, mlp=64, image=28, Hq=32, layers=2, q_heads=2, inter=64,
            vocab=142, max_pos=64, freq=2, Nq=4, embed_dim=16)


def lavis_state_dict(seed: int = 0, d: dict = DIMS, tower_scale: float = 1.0) -> dict[str, torch.Tensor]:
    """Every tensor LAVIS' Blip2Qformer checkpoint holds, with exactly its key names; biases and
    norms are random too, so a mis-mapped key cannot hide behind a default 0 or 1.

    ``tower_scale`` shrinks what writes into the EVA residual stream, so its variance comes near
    the LayerNorm eps and a wrong eps (1e-6 vs 1e-5) changes the outputs measurably."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=0.1, base=0.0):
        return base + scale * torch.randn(*shape, generator=g)

    D, Hq, P = d["D"], d["Hq"], (d["image"] // d["patch"]) ** 2
    sd = {
        "visual_encoder.cls_token": r(1, 1, D), "visual_encoder.pos_embed": r(1, P + 1, D),
        "visual_encoder.patch_embed.proj.weight": r(D, 3, d["patch"], d["patch"], scale=0.02),
        "visual_encoder.patch_embed.proj.bias": r(D),
        "ln_vision.weight": r(D, base=1.0), "ln_vision.bias": r(D),
        "query_tokens": r(1, d["Nq"], Hq, scale=0.5),
        "Qformer.bert.embeddings.position_ids": torch.arange(d["max_pos"]).unsqueeze(0),
        "Qformer.bert.embeddings.word_embeddings.weight": r(d["vocab"], Hq, scale=0.5),
        "Qformer.bert.embeddings.position_embeddings.weight": r(d["max_pos"], Hq, scale=0.5),
        "Qformer.bert.embeddings.LayerNorm.weight": r(Hq, base=1.0), "Qformer.bert.embeddings.LayerNorm.bias": r(Hq),
        "Qformer.cls.predictions.bias": r(d["vocab"]),
        "Qformer.cls.predictions.transform.dense.weight": r(Hq, Hq), "Qformer.cls.predictions.transform.dense.bias": r(Hq),
        "Qformer.cls.predictions.transform.LayerNorm.weight": r(Hq, base=1.0),
        "Qformer.cls.predictions.transform.LayerNorm.bias": r(Hq),
        "Qformer.cls.predictions.decoder.weight": r(d["vocab"], Hq), "Qformer.cls.predictions.decoder.bias": r(d["vocab"]),
        "vision_proj.weight": r(d["embed_dim"], Hq), "vision_proj.bias": r(d["embed_dim"]),
        "text_proj.weight": r(d["embed_dim"], Hq), "text_proj.bias": r(d["embed_dim"]),
        "itm_head.weight": r(2, Hq), "itm_head.bias": r(2), "temp": torch.tensor(0.05),
    }
    for i in range(d["depth"]):
        b = f"visual_encoder.blocks.{i}."
        sd.update({
            b + "norm1.weight": r(D, base=1.0), b + "norm1.bias": r(D),
            b + "attn.q_bias": r(D), b + "attn.v_bias": r(D), b + "attn.qkv.weight": r(3 * D, D, scale=0.2),
            b + "attn.proj.weight": r(D, D, scale=0.2), b + "attn.proj.bias": r(D),
            b + "norm2.weight": r(D, base=1.0), b + "norm2.bias": r(D),
            b + "mlp.fc1.weight": r(d["mlp"], D, scale=0.2), b + "mlp.fc1.bias": r(d["mlp"]),
            b + "mlp.fc2.weight": r(D, d["mlp"], scale=0.2), b + "mlp.fc2.bias": r(D),
        })
    for i in range(d["layers"]):
        b = f"Qformer.bert.encoder.layer.{i}."
        blocks = [("attention", Hq)] + ([("crossattention", D)] if i % d["freq"] == 0 else [])
        for name, kv_width in blocks:
            sd.update({
                b + f"{name}.self.query.weight": r(Hq, Hq, scale=0.2), b + f"{name}.self.query.bias": r(Hq),
                b + f"{name}.self.key.weight": r(Hq, kv_width, scale=0.2), b + f"{name}.self.key.bias": r(Hq),
                b + f"{name}.self.value.weight": r(Hq, kv_width, scale=0.2), b + f"{name}.self.value.bias": r(Hq),
                b + f"{name}.output.dense.weight": r(Hq, Hq, scale=0.2), b + f"{name}.output.dense.bias": r(Hq),
                b + f"{name}.output.LayerNorm.weight": r(Hq, base=1.0), b + f"{name}.output.LayerNorm.bias": r(Hq),
            })
        for suffix in ("", "_query"):
            sd.update({
                b + f"intermediate{suffix}.dense.weight": r(d["inter"], Hq, scale=0.2),
                b + f"intermediate{suffix}.dense.bias": r(d["inter"]),
                b + f"output{suffix}.dense.weight": r(Hq, d["inter"], scale=0.2), b + f"output{suffix}.dense.bias": r(Hq),
                b + f"output{suffix}.LayerNorm.weight": r(Hq, base=1.0), b + f"output{suffix}.LayerNorm.bias": r(Hq),
            })
    # LAVIS' BertLMHeadModel ties the LM decoder to the word embeddings and its bias to predictions.bias:
    # a checkpoint holds both names with the same values
    sd["Qformer.cls.predictions.decoder.weight"] = sd["Qformer.bert.embeddings.word_embeddings.weight"].clone()
    sd["Qformer.cls.predictions.decoder.bias"] = sd["Qformer.cls.predictions.bias"].clone()
    small = ("cls_token", "pos_embed", "patch_embed.proj.", "attn.proj.", "mlp.fc2.")
    for key in sd:
        if key.startswith("visual_encoder.") and any(part in key for part in small):
            sd[key] = sd[key] * tower_scale
    return sd


def _ln(x, sd, prefix, eps):
    return F.layer_norm(x, x.shape[-1:], sd[prefix + "weight"], sd[prefix + "bias"], eps)


def _lin(x, sd, prefix):
    return x @ sd[prefix + "weight"].T + sd[prefix + "bias"]


def _attend(q, k, v, heads, key_mask=None):
    """``key_mask``: [B, K] (which keys every position may see) or [B, Tq, K] (per position)."""
    B, Tq, C = q.shape
    hd = C // heads
    q, k, v = (t.reshape(B, t.shape[1], heads, hd).transpose(1, 2) for t in (q, k, v))
    scores = q @ k.transpose(-1, -2) / math.sqrt(hd)
    if key_mask is not None:
        mask = key_mask[:, None, None, :] if key_mask.dim() == 2 else key_mask[:, None]
        scores = scores.masked_fill(mask == 0, float("-inf"))
    return (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, Tq, C)


def vision(sd, image, d=DIMS):
    """EVA ViT: patches + cls + pos, pre-norm blocks (LN 1e-6, q/v biases only), then ln_vision (1e-5)."""
    x = F.conv2d(image, sd["visual_encoder.patch_embed.proj.weight"], sd["visual_encoder.patch_embed.proj.bias"],
                 stride=d["patch"]).flatten(2).transpose(1, 2)
    x = torch.cat([sd["visual_encoder.cls_token"].expand(x.shape[0], -1, -1), x], 1) + sd["visual_encoder.pos_embed"]
    for i in range(d["depth"]):
        b = f"visual_encoder.blocks.{i}."
        h = _ln(x, sd, b + "norm1.", 1e-6)
        bias = torch.cat([sd[b + "attn.q_bias"], torch.zeros_like(sd[b + "attn.q_bias"]), sd[b + "attn.v_bias"]])
        q, k, v = (h @ sd[b + "attn.qkv.weight"].T + bias).chunk(3, dim=-1)
        x = x + _lin(_attend(q, k, v, d["vit_heads"]), sd, b + "attn.proj.")
        h = _ln(x, sd, b + "norm2.", 1e-6)
        x = x + _lin(F.gelu(_lin(h, sd, b + "mlp.fc1.")), sd, b + "mlp.fc2.")
    return _ln(x, sd, "ln_vision.", 1e-5)


def _bert_attention(sd, prefix, hidden, context, heads, key_mask=None):
    q = _lin(hidden, sd, prefix + "self.query.")
    k, v = _lin(context, sd, prefix + "self.key."), _lin(context, sd, prefix + "self.value.")
    out = _lin(_attend(q, k, v, heads, key_mask), sd, prefix + "output.dense.")
    return _ln(out + hidden, sd, prefix + "output.LayerNorm.", 1e-12)


def _ffn(sd, prefix, suffix, x):
    h = _lin(F.gelu(_lin(x, sd, f"{prefix}intermediate{suffix}.dense.")), sd, f"{prefix}output{suffix}.dense.")
    return _ln(h + x, sd, f"{prefix}output{suffix}.LayerNorm.", 1e-12)


def qformer(sd, image_embeds=None, input_ids=None, text_mask=None, d=DIMS, decoder=False):
    """LAVIS' Qformer.bert: [queries; text] -> embeddings LayerNorm -> layers whose query part
    also cross-attends to the image and uses the ``_query`` FFN; text uses the plain FFN.
    ``decoder``: LAVIS' ITG pass (queries computed alone, as its cached query pass; text token j
    sees every query and the non-padding text tokens <= j)."""
    E = "Qformer.bert.embeddings."
    parts, masks = [], []
    B = image_embeds.shape[0] if image_embeds is not None else input_ids.shape[0]
    nq = 0
    if image_embeds is not None:
        nq = d["Nq"]
        parts.append(sd["query_tokens"].expand(B, -1, -1))
        masks.append(torch.ones(B, nq, dtype=torch.long))
    if input_ids is not None:
        pos = torch.arange(input_ids.shape[1])
        parts.append(sd[E + "word_embeddings.weight"][input_ids] + sd[E + "position_embeddings.weight"][pos])
        masks.append(text_mask)
    h = _ln(torch.cat(parts, 1), sd, E + "LayerNorm.", 1e-12)
    mask = torch.cat(masks, 1)
    if decoder:
        T = input_ids.shape[1]
        full = torch.zeros(B, nq + T, nq + T, dtype=torch.long)
        full[:, :, :nq] = 1
        full[:, nq:, nq:] = torch.tril(torch.ones(T, T, dtype=torch.long))[None] * text_mask[:, None, :]
        mask = full
    for i in range(d["layers"]):
        b = f"Qformer.bert.encoder.layer.{i}."
        a = _bert_attention(sd, b + "attention.", h, h, d["q_heads"], mask)
        outs = []
        if nq:
            aq = a[:, :nq]
            if i % d["freq"] == 0:
                aq = _bert_attention(sd, b + "crossattention.", aq, image_embeds, d["q_heads"])
            outs.append(_ffn(sd, b, "_query", aq))
        if a.shape[1] > nq:
            outs.append(_ffn(sd, b, "", a[:, nq:]))
        h = torch.cat(outs, 1)
    return h


def lm_head(sd, hidden):
    """LAVIS' Qformer.cls: dense -> GELU -> LayerNorm(1e-12) -> decoder (+ bias)."""
    P = "Qformer.cls.predictions."
    h = _ln(F.gelu(_lin(hidden, sd, P + "transform.dense.")), sd, P + "transform.LayerNorm.", 1e-12)
    return h @ sd[P + "decoder.weight"].T + sd[P + "bias"]
