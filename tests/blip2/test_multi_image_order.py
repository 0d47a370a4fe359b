"""Several images in one sample: each image mark's placeholders receive exactly that image's
projected Q-Former queries, in the order the marks appear — checked on the embeddings the LLM
receives, against each image encoded alone."""

from __future__ import annotations

import torch

from .test_blip2_llm import build


def _llm_inputs(model, samples) -> torch.Tensor:
    """The ``inputs_embeds`` that ``model.llm`` is called with during ``model(samples)``."""
    seen = {}

    def keep(_module, _args, kwargs):
        seen["embeds"] = kwargs["inputs_embeds"].detach().clone()

    handle = model.llm.register_forward_pre_hook(keep, with_kwargs=True)
    try:
        model(samples)
    finally:
        handle.remove()
    return seen["embeds"]


def _alone(model, image: torch.Tensor) -> torch.Tensor:
    """One image's LLM-space tokens, encoded in a batch of its own: (num_query_token, D)."""
    with torch.no_grad():
        return model.encode_images(image.unsqueeze(0))[0]


def test_each_placeholder_run_gets_its_own_image(test_llm_plugin):
    model = build().eval()
    g = torch.Generator().manual_seed(3)
    first, second, third = (torch.rand(3, 28, 28, generator=g) for _ in range(3))
    conversations = [
        [{"from": "user", "value": "<ImageHere> left, <ImageHere> right: which is brighter?"},
         {"from": "assistant", "value": "the left one"}],
        [{"from": "user", "value": "<ImageHere> describe it"}, {"from": "assistant", "value": "a texture"}],
    ]
    samples = {"image": [torch.stack([first, second]), third], "conversations": conversations}
    embeds = _llm_inputs(model, samples)

    encoded = [model.llm.encode_conversation(c, model.num_query_token, model.max_txt_len) for c in conversations]
    ids = model.llm.collate(encoded)["input_ids"]
    nq = model.num_query_token
    expected = {0: [_alone(model, first), _alone(model, second)], 1: [_alone(model, third)]}
    assert not torch.allclose(expected[0][0], expected[0][1], atol=1e-4)  # the images are told apart
    for row, images in expected.items():
        positions = (ids[row] == model.llm.image_token_id).nonzero().flatten()
        assert len(positions) == nq * len(images)
        for k, tokens in enumerate(images):
            got = embeds[row, positions[k * nq:(k + 1) * nq]]
            torch.testing.assert_close(got, tokens.to(got.dtype), rtol=1e-5, atol=1e-5, msg=f"sample {row}, image {k}")
    # the text positions keep their own token embeddings
    text = ids[0] != model.llm.image_token_id
    torch.testing.assert_close(embeds[0][text], model.llm.embed_tokens(ids[0:1])[0][text].detach())
