"""``blip_retrieval``'s training step against the formulas of LAVIS' ``BlipRetrieval`` written out here:
the momentum update, ITC with soft targets (``alpha``, its ramp-up, positives by image id across the
queue), the queue contents after the enqueue, and the ITM labels and hard negatives under a seed."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mm_core.errors import DataError
from tests.blip.conftest import build_tiny

TEXTS = ["a red circle", "two blue squares", "a big red circle", "a green triangle"]
IDS = [7, 3, 7, 5]  # samples 0 and 2 show one image


def exact_model(**options):
    """The tiny type in float64 without dropout, so a training-mode forward is deterministic."""
    torch.manual_seed(0)
    text = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    return build_tiny("blip_retrieval", text=text, **options).double().train()


def batch(**extra) -> dict:
    generator = torch.Generator().manual_seed(4)
    return {"image": torch.randn(4, 3, 32, 32, generator=generator, dtype=torch.float64), "text_input": TEXTS,
            "image_id": torch.tensor(IDS), **extra}


def features(model, samples, momentum: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised [CLS] projections of the online (or momentum) encoders, computed here."""
    vision, text_model, vproj, tproj = ((model.vision_model_m, model.text_encoder_m, model.vision_proj_m, model.text_proj_m)
                                        if momentum else (model.vision_model, model.text_encoder, model.vision_proj,
                                                          model.text_proj))
    tokens = model.tokenizer(TEXTS, padding="max_length", truncation=True, max_length=35, return_tensors="pt")
    with torch.no_grad():
        image = vision(pixel_values=samples["image"]).last_hidden_state[:, 0]
        text = text_model(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask).last_hidden_state[:, 0]
    return F.normalize(vproj(image), dim=-1), F.normalize(tproj(text), dim=-1)


def reference_itc(img, txt, img_m, txt_m, image_queue, text_queue, ids, idx_queue, temp, alpha):
    """LAVIS' formulas, one row at a time."""
    columns_t = torch.cat([txt_m, text_queue.t()])  # (B + Q, D)
    columns_i = torch.cat([img_m, image_queue.t()])
    column_ids = torch.cat([ids, idx_queue.view(-1)])
    losses = []
    for row in range(len(ids)):
        positive = (column_ids == ids[row]).double()
        hard = positive / positive.sum()
        soft_i2t = torch.softmax(img_m[row] @ columns_t.t() / temp.detach(), 0)  # targets: no gradient (LAVIS)
        soft_t2i = torch.softmax(txt_m[row] @ columns_i.t() / temp.detach(), 0)
        i2t = -(torch.log_softmax(img[row] @ columns_t.t() / temp, 0) * (alpha * soft_i2t + (1 - alpha) * hard)).sum()
        t2i = -(torch.log_softmax(txt[row] @ columns_i.t() / temp, 0) * (alpha * soft_t2i + (1 - alpha) * hard)).sum()
        losses.append((i2t + t2i) / 2)
    return torch.stack(losses).mean()


def test_training_step_matches_the_formulas():
    model = exact_model()
    model.idx_queue[0, :6] = torch.tensor([7, 7, 3, 1, 2, 5])  # positives waiting in the queue
    model.queue_ptr[0] = 30  # the write wraps around the end: columns 30, 31, 0, 1
    samples = batch(epoch=0, iters=3, num_iters_per_epoch=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = model(samples)
    alpha = 0.4 * min(1, 3 / 8)  # LAVIS' ramp: (epoch * n + iters) / (2 n)
    after = model.state_dict()
    for online, copy in [("vision_model", "vision_model_m"), ("text_encoder", "text_encoder_m"),
                         ("vision_proj", "vision_proj_m"), ("text_proj", "text_proj_m")]:
        for name, param in getattr(model, online).named_parameters():
            expected = 0.995 * before[f"{copy}.{name}"] + 0.005 * param.detach()
            torch.testing.assert_close(after[f"{copy}.{name}"], expected, atol=1e-12, rtol=0, msg=name)
    img, txt = features(model, samples, momentum=False)
    img_m, txt_m = features(model, samples, momentum=True)
    ids = torch.tensor(IDS)
    expected = reference_itc(img, txt, img_m, txt_m, before["image_queue"], before["text_queue"], ids,
                             before["idx_queue"], model.temp.detach(), alpha)
    assert abs(float(out["loss_itc"]) - float(expected.detach())) < 1e-12
    without_distillation = reference_itc(img, txt, img_m, txt_m, before["image_queue"], before["text_queue"], ids,
                                         before["idx_queue"], model.temp.detach(), 0.0)
    assert abs(float(without_distillation.detach()) - float(expected.detach())) > 1e-4  # alpha matters in this check
    columns = [30, 31, 0, 1]
    torch.testing.assert_close(model.image_queue[:, columns], img_m.t(), atol=1e-12, rtol=0)
    torch.testing.assert_close(model.text_queue[:, columns], txt_m.t(), atol=1e-12, rtol=0)
    assert model.idx_queue[0, columns].tolist() == IDS and int(model.queue_ptr) == 2
    untouched = [c for c in range(32) if c not in columns]
    assert torch.equal(model.image_queue[:, untouched], before["image_queue"][:, untouched])
    assert torch.equal(model.idx_queue[:, untouched], before["idx_queue"][:, untouched])
    assert int(model.distill_step) == 1


def test_itm_labels_and_hard_negatives_under_a_seed():
    model = exact_model()
    samples = batch()
    img, txt = features(model, samples, momentum=False)
    image_embeds = model.encode_image(samples["image"])
    input_ids, attention_mask = model.retrieval_tokenize(TEXTS)
    ids = torch.tensor(IDS)
    torch.manual_seed(11)
    images, texts, masks = model.itm_pairs(image_embeds, img, txt, input_ids, attention_mask, ids)
    same = ids.view(-1, 1) == ids.view(1, -1)
    temp = model.temp.detach()
    weights_t2i = torch.softmax(txt @ img.t() / temp, 1).masked_fill(same, 0)  # a negative image per text
    weights_i2t = torch.softmax(img @ txt.t() / temp, 1).masked_fill(same, 0)
    torch.manual_seed(11)
    negative_images = torch.multinomial(weights_t2i, 1).view(-1)
    negative_texts = torch.multinomial(weights_i2t, 1).view(-1)
    assert not same[torch.arange(4), negative_images].any() and not same[torch.arange(4), negative_texts].any()
    torch.testing.assert_close(images, torch.cat([image_embeds, image_embeds[negative_images], image_embeds]))
    assert torch.equal(texts, torch.cat([input_ids, input_ids, input_ids[negative_texts]]))
    assert torch.equal(masks, torch.cat([attention_mask, attention_mask, attention_mask[negative_texts]]))
    logits = model.itm_logits(images, texts, masks)
    labels = torch.tensor([1] * 4 + [0] * 8)
    expected = -torch.log_softmax(logits, 1)[torch.arange(12), labels].mean()
    torch.testing.assert_close(model.itm_loss(images, texts, masks), expected)


def test_the_alpha_ramp_and_what_evaluation_leaves_alone():
    model = exact_model()
    assert model.distillation_alpha({"epoch": 0, "iters": 0, "num_iters_per_epoch": 10}) == 0
    assert model.distillation_alpha({"epoch": 1, "iters": 0, "num_iters_per_epoch": 10}) == pytest.approx(0.2)
    assert model.distillation_alpha({"epoch": 3, "iters": 5, "num_iters_per_epoch": 10}) == pytest.approx(0.4)
    assert model.distillation_alpha({}) == 0.4  # no ramp information, no alpha_rampup_iters: LAVIS' alpha
    ramped = exact_model(alpha_rampup_iters=4)
    ramped.distill_step[0] = 1
    assert ramped.distillation_alpha({}) == pytest.approx(0.1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.eval()(batch())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(DataError, match="samples\\['image_id'\\]"):
        model({"image": batch()["image"], "text_input": TEXTS})
    with pytest.raises(DataError, match="larger than model.queue_size"):
        exact_model(queue_size=2)(batch())
