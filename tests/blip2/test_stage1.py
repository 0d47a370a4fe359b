"""The ``blip2`` arch (BLIP-2 stage 1) against an independent computation: LAVIS-layout random weights
are loaded, and the features, ITC / ITM / ITG losses and scores are recomputed here from the formulas
with :mod:`lavis_reference`'s plain-tensor forward (no timm, no transformers, no model helper)."""

from __future__ import annotations

import math

import lavis_reference as ref
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from mm_blip2.checkpoints import load_lavis_state_dict
from mm_core.config.loader import load_model_defaults
from mm_core.errors import DataError
from mm_core.registry import get_registry

SMOOTHING = 0.1
TEXTS = ["a red cat", "two dogs on the grass", "a bus in the city", "a red cat sleeping"]
IMAGE_IDS = [7, 3, 9, 7]  # texts 0 and 3 describe one image: both are positives of it


def build(arch: str = "blip2", **overrides):
    cfg = load_model_defaults(arch, "tiny").model
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value, force_add=True)
    torch.manual_seed(1)
    return get_registry().resolve("models", arch).from_config(cfg)


@pytest.fixture(scope="module")
def sd():
    return ref.lavis_state_dict(seed=2)


@pytest.fixture(scope="module")
def model(sd):
    model = build()
    report = load_lavis_state_dict(model, dict(sd))
    assert report.missing == [] and report.unexpected == [] and report.ignored == []
    return model.eval()  # no dropout: the losses are deterministic given the seed


@pytest.fixture(scope="module")
def batch():
    torch.manual_seed(5)
    # images 0 and 3 are two augmentations of one image (one id): the pixels differ, so hard diagonal
    # targets and LAVIS' id-aware ones give different losses
    image = torch.randn(4, 3, 28, 28)
    return {"image": image, "text_input": TEXTS, "image_id": torch.tensor(IMAGE_IDS)}


def reference_features(sd, model, batch):
    """(vit, query outputs, image_feats, input_ids, mask, text_feat) from the reference forward."""
    tokens = model.tokenizer(batch["text_input"], padding="max_length", truncation=True,
                             max_length=model.max_txt_len, return_tensors="pt")
    vit = ref.vision(sd, batch["image"])
    queries = ref.qformer(sd, image_embeds=vit)
    image_feats = F.normalize(queries @ sd["vision_proj.weight"].T + sd["vision_proj.bias"], dim=-1)
    text = ref.qformer(sd, input_ids=tokens.input_ids, text_mask=tokens.attention_mask)[:, 0]
    text_feat = F.normalize(text @ sd["text_proj.weight"].T + sd["text_proj.bias"], dim=-1)
    return vit, image_feats, tokens.input_ids, tokens.attention_mask, text_feat


def smoothed_cross_entropy(logits: list[list[float]], targets: list[list[float]]) -> float:
    """Mean over rows of -sum_c q_c log softmax(row)_c with q = (1 - 0.1) * target + 0.1 / C."""
    total = 0.0
    for row, target in zip(logits, targets):
        top = max(row)
        log_norm = top + math.log(sum(math.exp(v - top) for v in row))
        n = len(row)
        total -= sum(((1 - SMOOTHING) * t + SMOOTHING / n) * (v - log_norm) for v, t in zip(row, target))
    return total / len(logits)


def test_itc_with_smoothing_and_duplicate_image_ids(model, sd, batch):
    with torch.no_grad():
        out = model(batch)
        _, image_feats, _, _, text_feat = reference_features(sd, model, batch)
    temp = float(sd["temp"])
    n, nq = image_feats.shape[:2]
    sim = [[max(float(image_feats[i, q].double() @ text_feat[t].double()) for q in range(nq)) / temp
            for t in range(n)] for i in range(n)]
    targets = []
    for i in range(n):
        same = [1.0 if IMAGE_IDS[t] == IMAGE_IDS[i] else 0.0 for t in range(n)]
        targets.append([s / sum(same) for s in same])
    t2i = [[sim[i][t] for i in range(n)] for t in range(n)]
    expected = (smoothed_cross_entropy(sim, targets) + smoothed_cross_entropy(t2i, targets)) / 2
    assert float(out["loss_itc"]) == pytest.approx(expected, abs=1e-5)
    # the formula's parts are visible: hard diagonal targets, or no smoothing, give other values
    diagonal = [[1.0 if t == i else 0.0 for t in range(n)] for i in range(n)]
    hard = (smoothed_cross_entropy(sim, diagonal) + smoothed_cross_entropy(t2i, diagonal)) / 2
    assert abs(hard - expected) > 1e-2
    unsmoothed = [[(t - SMOOTHING / n) / (1 - SMOOTHING) for t in row] for row in targets]
    assert abs(smoothed_cross_entropy(sim, unsmoothed) - smoothed_cross_entropy(sim, targets)) > 1e-3


def test_temperature_is_clamped_to_lavis_range():
    model = build().eval()
    batch = {"image": torch.randn(2, 3, 28, 28), "text_input": ["a cat", "a dog"]}
    for value, expected in ((5.0, 0.5), (1e-6, 0.001), (0.2, 0.2)):
        with torch.no_grad():
            model.temp.fill_(value)
            model(batch)
        assert float(model.temp) == pytest.approx(expected)


def independent_negative_weights(sim_rows: torch.Tensor, row_ids: list[int], ids: list[int]) -> torch.Tensor:
    weights = torch.softmax(sim_rows.double(), dim=1) + 1e-4
    for i, own in enumerate(row_ids):
        for j, other in enumerate(ids):
            if own == other:
                weights[i, j] = 0.0
    return weights


def test_itm_labels_and_hard_negatives_equal_the_formula(model, sd, batch):
    torch.manual_seed(11)
    with torch.no_grad():
        out = model(batch)
        vit, image_feats, ids, mask, text_feat = reference_features(sd, model, batch)
    temp = float(sd["temp"])
    sim_i2t = torch.einsum("iqd,td->itq", image_feats, text_feat).max(-1).values / temp
    w_t2i = independent_negative_weights(sim_i2t.t(), IMAGE_IDS, IMAGE_IDS)
    w_i2t = independent_negative_weights(sim_i2t, IMAGE_IDS, IMAGE_IDS)
    torch.manual_seed(11)  # the forward draws the negative images, then the negative texts
    neg_img = torch.multinomial(w_t2i.float(), 1).squeeze(1)
    neg_txt = torch.multinomial(w_i2t.float(), 1).squeeze(1)
    assert all(IMAGE_IDS[int(j)] != IMAGE_IDS[i] for i, j in enumerate(neg_img))
    assert all(IMAGE_IDS[int(j)] != IMAGE_IDS[i] for i, j in enumerate(neg_txt))
    texts = torch.cat([ids, ids, ids[neg_txt]])
    masks = torch.cat([mask, mask, mask[neg_txt]])
    images = torch.cat([vit, vit[neg_img], vit])
    with torch.no_grad():
        joint = ref.qformer(sd, image_embeds=images, input_ids=texts, text_mask=masks)[:, : ref.DIMS["Nq"]]
    logits = (joint @ sd["itm_head.weight"].T + sd["itm_head.bias"]).mean(dim=1)
    labels = [1] * 4 + [0] * 8
    expected = sum(float(torch.logsumexp(row, 0) - row[y]) for row, y in zip(logits.double(), labels)) / 12
    assert float(out["loss_itm"]) == pytest.approx(expected, abs=1e-5)


def test_hard_negative_sampling_distribution(model):
    """Seeded draws follow softmax(sim) + 1e-4 with the row's own image (and its duplicates) at 0."""
    sim = torch.tensor([[3.0, 1.0, 0.0, 2.5], [0.5, 2.0, 1.5, -1.0], [1.0, 0.0, 2.0, 1.0], [2.5, 0.3, 0.1, 3.0]])
    ids = torch.tensor(IMAGE_IDS)
    expected = independent_negative_weights(sim, IMAGE_IDS, IMAGE_IDS)
    expected = expected / expected.sum(1, keepdim=True)
    torch.manual_seed(0)
    draws = 6000
    negative_images = torch.stack([model.sample_negatives(sim, sim, ids, ids)[0] for _ in range(draws)])
    freq = F.one_hot(negative_images, 4).sum(0).double() / draws
    assert torch.all(freq[expected == 0] == 0)  # a positive (same image id) is never drawn
    assert torch.allclose(freq, expected, atol=0.025)  # 3-sigma of 6,000 draws is < 0.02


def test_itm_refuses_a_batch_without_negatives():
    model = build().eval()
    with pytest.raises(DataError, match="no negative"):
        model({"image": torch.randn(2, 3, 28, 28), "text_input": ["a", "b"], "image_id": torch.tensor([4, 4])})


def test_itg_masking_and_loss_equal_the_formula(model, sd, batch):
    with torch.no_grad():
        out = model(batch)
        vit, _, ids, mask, _ = reference_features(sd, model, batch)
    dec = ids.clone()
    dec[:, 0] = model.tokenizer.bos_token_id  # [DEC]
    with torch.no_grad():
        hidden = ref.qformer(sd, image_embeds=vit, input_ids=dec, text_mask=mask, decoder=True)[:, ref.DIMS["Nq"]:]
        logits = ref.lm_head(sd, hidden).double()
    total, count = 0.0, 0
    vocab = logits.shape[-1]
    for b in range(dec.shape[0]):
        for j in range(dec.shape[1] - 1):
            target = int(dec[b, j + 1])
            if target == model.tokenizer.pad_token_id:
                continue  # padding is not predicted
            log_probs = torch.log_softmax(logits[b, j], 0)
            total += -(1 - SMOOTHING) * float(log_probs[target]) - SMOOTHING / vocab * float(log_probs.sum())
            count += 1
    assert count == int(mask[:, 1:].sum())
    assert float(out["loss_lm"]) == pytest.approx(total / count, abs=1e-5)
    with torch.no_grad():
        mm_logits = model.decoder_logits(vit, dec, mask)
        valid = mask.bool()
        torch.testing.assert_close(mm_logits[valid].double(), logits[valid], atol=1e-4, rtol=0)
        # causal: changing the last real token of caption 1 leaves every earlier position unchanged
        last = int(mask[1].sum()) - 1
        changed = dec.clone()
        changed[1, last] = (changed[1, last] + 1) % vocab
        again = model.decoder_logits(vit, changed, mask)
        torch.testing.assert_close(again[1, :last], mm_logits[1, :last], atol=1e-6, rtol=0)
        assert (again[1, last] - mm_logits[1, last]).abs().max() > 1e-4
    assert float(out["loss"]) == pytest.approx(float(out["loss_itc"] + out["loss_itm"] + out["loss_lm"]), abs=1e-5)


def test_retrieval_contract_scores_equal_the_reference(model, sd, batch):
    with torch.no_grad():
        vit, image_feats, ids, mask, text_feat = reference_features(sd, model, batch)
        got_ids, got_mask = model.retrieval_tokenize(batch["text_input"])
        assert got_ids.shape == (4, model.max_txt_len) and torch.equal(got_ids, ids) and torch.equal(got_mask, mask)
        image_embeds, feats = model.retrieval_image_features(batch["image"])
        torch.testing.assert_close(image_embeds, vit, atol=1e-5, rtol=0)
        torch.testing.assert_close(feats, image_feats, atol=1e-5, rtol=0)
        torch.testing.assert_close(model.retrieval_text_features(ids, mask), text_feat, atol=1e-5, rtol=0)
        joint = ref.qformer(sd, image_embeds=vit, input_ids=ids, text_mask=mask)[:, : ref.DIMS["Nq"]]
        match_logit = (joint @ sd["itm_head.weight"][1] + sd["itm_head.bias"][1]).mean(dim=1)  # LAVIS' compute_itm
        torch.testing.assert_close(model.retrieval_itm_scores(image_embeds, ids, mask), match_logit, atol=1e-5, rtol=0)


def test_image_text_matching_heads(sd, batch):
    itm = build("blip2_image_text_matching")
    load_lavis_state_dict(itm, dict(sd))
    itm.eval()
    samples = {"image": batch["image"][:2], "text_input": batch["text_input"][:2]}
    with torch.no_grad():
        vit, image_feats, _, _, text_feat = reference_features(sd, itm, samples)
        tokens = itm.tokenizer(samples["text_input"], padding="longest", return_tensors="pt")
        joint = ref.qformer(sd, image_embeds=vit, input_ids=tokens.input_ids,
                            text_mask=tokens.attention_mask)[:, : ref.DIMS["Nq"]]
        expected_itm = (joint @ sd["itm_head.weight"].T + sd["itm_head.bias"]).mean(dim=1)
        torch.testing.assert_close(itm(samples, match_head="itm"), expected_itm, atol=1e-5, rtol=0)
        expected_itc = torch.einsum("iqd,id->iq", image_feats, text_feat).max(1, keepdim=True).values
        torch.testing.assert_close(itm(samples, match_head="itc"), expected_itc, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="match_head"):
        itm(samples, match_head="both")


def test_generate_beam_and_nucleus(model, batch):
    images = {"image": batch["image"][:2]}
    beam = model.generate(images, num_beams=3, max_length=12, min_length=4)
    assert len(beam) == 2 and all(isinstance(c, str) and c for c in beam)
    assert model.generate(images, num_beams=3, max_length=12, min_length=4) == beam  # beam search is deterministic
    torch.manual_seed(0)
    sampled = model.generate(images, use_nucleus_sampling=True, top_p=0.9, max_length=12, min_length=4)
    assert len(sampled) == 2
    # min / max length are honoured: [DEC] + at least min_length - 1 tokens, at most max_length in all
    from mm_blip2.models.qformer_generation import generate_captions

    with torch.no_grad():
        ids = generate_captions(model, model.encode_image(images["image"]), False, 3, 12, 4, 0.9, 1.0)
    assert ids.shape[1] <= 12 and bool((ids[:, 0] == model.tokenizer.bos_token_id).all())
    assert all(int((row != model.tokenizer.pad_token_id).sum()) >= 4 for row in ids)
