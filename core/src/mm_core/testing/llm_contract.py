"""``check_llm_backend``: the :class:`~mm_core.base.llm.BaseLLM` contract (docs/llm_backend.md),
as the project checks its own backends."""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

from mm_core.registry import get_registry
from mm_core.testing.contracts import _fail

ANSWER = "a cat sitting on a red sofa"


def check_llm_backend(name: str, cfg: dict[str, Any] | None = None, num_image_tokens: int = 3) -> Any:
    """Build backend ``name`` from ``{"name": name, **cfg}`` (its ``model.llm`` block) and check:
    the tokenizer round trip; ``<ImageHere>`` -> ``num_image_tokens`` contiguous placeholders (a
    typed image token removed), never split by truncation; labels on the answer only, and ``forward``'s
    loss is the mean cross-entropy over those tokens; ``encode_prompt`` is the prefix training sees;
    batched (left-padded) ``generate`` equals one-by-one, and streaming yields the same text; a rebuild
    has the same frozen weights and, after loading the trainable ones, the same logits. Returns it."""
    import torch
    from torch.nn.functional import cross_entropy

    from mm_core.base.llm import IGNORE_INDEX, IMAGE_MARK

    block = OmegaConf.create({"name": name, **(cfg or {})})
    llm_cls, n = get_registry().resolve("llms", name), num_image_tokens
    torch.manual_seed(0)
    llm = llm_cls.from_config(block).eval()

    def check(ok: bool, problem: str) -> None:
        if not ok:
            raise _fail("LLM backend", name, problem)

    tokenizer = llm.tokenizer
    ids = tokenizer(ANSWER, add_special_tokens=False).input_ids
    check(tokenizer.decode(ids, skip_special_tokens=True).strip() == ANSWER, "tokenizer decode(encode(text)) != text")
    check(tokenizer.pad_token_id is not None, "the tokenizer has no pad_token_id")
    check(tuple(llm.embed_tokens(torch.tensor([ids])).shape) == (1, len(ids), llm.hidden_size),
          "embed_tokens must return (B, T, hidden_size)")
    user = {"from": "user", "value": f"{IMAGE_MARK} what is {llm.image_token} this"}
    conversation = [user, {"from": "assistant", "value": ANSWER}]
    encoded = llm.encode_conversation(conversation, n)
    tokens, labels = encoded["input_ids"], encoded["labels"]
    where = [i for i, t in enumerate(tokens) if t == llm.image_token_id]
    check(len(where) == n and where == list(range(where[0], where[0] + n)),
          f"one {IMAGE_MARK} must become {n} contiguous image_token_id (a typed image_token removed), got {where}")
    seq2seq = llm.is_encoder_decoder  # labels are the decoder's target, not aligned with the ids
    supervised = [t for t, label in zip(labels if seq2seq else tokens, labels) if label != IGNORE_INDEX]
    check(seq2seq or all(label in (IGNORE_INDEX, t) for t, label in zip(tokens, labels)), "labels must be the ids or -100")
    check(tokenizer.decode(supervised, skip_special_tokens=True).strip() == ANSWER,
          "only the assistant's answer (and its end-of-turn token) may be supervised")
    cut = llm.encode_conversation(conversation, n, max_len=where[0] + 1)["input_ids"]
    check(cut.count(llm.image_token_id) in (0, n), "truncation kept part of an image's placeholders")
    prompt = llm.encode_prompt([user], n)
    check(tokens[:len(prompt)] == prompt, "encode_prompt must be the prefix of the training encoding")

    short = [{"from": "user", "value": f"{IMAGE_MARK} hi"}, {"from": "assistant", "value": "yes"}]
    batch = llm.collate([encoded, llm.encode_conversation(short, n)])
    with torch.no_grad():
        out = llm(llm.embed_tokens(batch["input_ids"]), batch["attention_mask"], labels=batch["labels"])
        shift = 0 if seq2seq else 1  # a causal LM's logits at t predict the label at t + 1
        expected = cross_entropy(out.logits[:, :out.logits.shape[1] - shift].flatten(0, 1).float(),
                                 batch["labels"][:, shift:].flatten(), ignore_index=IGNORE_INDEX)
        check(torch.allclose(out.loss.float(), expected, atol=1e-4), f"loss {out.loss} != mean CE {expected}")
        _check_generation(llm, [prompt, llm.encode_prompt(short[:1], n)], check)
        _check_rebuild(llm_cls, block, llm, batch, check)
    return llm


def _check_generation(llm: Any, prompts: list[list[int]], check: Any) -> None:
    def generate(encoded: list[list[int]], **kw: Any) -> list[str]:
        batch = llm.collate(encoded, padding_side="left")
        return llm.generate(llm.embed_tokens(batch["input_ids"]), batch["attention_mask"], max_new_tokens=5,
                            do_sample=False, **kw)

    singles = [generate([p])[0] for p in prompts]
    check(generate(prompts) == singles, f"batched generate differs from one-by-one: {generate(prompts)} vs {singles}")
    pieces: list[str] = []
    check(generate(prompts[:1], on_text=pieces.append)[0] == "".join(pieces).strip(), "streamed text != returned text")


def _check_rebuild(llm_cls: Any, block: Any, llm: Any, batch: dict[str, Any], check: Any) -> None:
    import torch

    torch.manual_seed(1)
    again = llm_cls.from_config(block).eval()
    mine, theirs = dict(llm.named_parameters()), dict(again.named_parameters())
    check(set(mine) == set(theirs), "two builds from one config have different parameters")
    frozen = [k for k, p in mine.items() if not p.requires_grad and not torch.equal(p, theirs[k])]
    check(not frozen, f"frozen weights differ between two builds (mm checkpoints hold none): {frozen[:3]}")
    again.load_state_dict({k: p for k, p in mine.items() if p.requires_grad}, strict=False)
    logits = [m(m.embed_tokens(batch["input_ids"]), batch["attention_mask"]).logits for m in (llm, again)]
    check(torch.allclose(*logits), "logits differ after a rebuild and loading the trainable weights")
