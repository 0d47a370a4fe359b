"""``hf_causal_lm`` and ``hf_seq2seq`` against transformers' own classes: tiny random OPT, LLaMA,
GPT-2 and Flan-T5 written with ``save_pretrained`` and loaded back through the backend, logits
(fp32, <= 1e-5) and greedy tokens compared with the bare model; the LAVIS layouts re-derived from
the tokenizer; fp32 ``wo`` under bf16; Flan-T5's untied ``lm_head``; freezing and LoRA."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    LlamaConfig,
    OPTConfig,
    T5Config,
    T5ForConditionalGeneration,
)

from mm_core.base.llm import IGNORE_INDEX, IMAGE_MARK
from mm_core.testing import check_llm_backend
from mm_qwen_llm.tiny_hf import assets_root

N = 4  # image placeholders per image in these tests


def tokenizer_dir(family: str):
    return assets_root() / family


def causal_config(kind: str, vocab: int):
    """Tiny transformers configs, written here (not the shipped ones), fp32, no dropout."""
    if kind == "opt":
        return OPTConfig(vocab_size=vocab, hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4,
                         word_embed_proj_dim=32, max_position_embeddings=128, dropout=0.0, pad_token_id=1,
                         bos_token_id=2, eos_token_id=2)
    if kind == "llama":
        return LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                           bos_token_id=1, eos_token_id=2)
    return GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=4, n_positions=128, resid_pdrop=0.0,
                      embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=2, eos_token_id=2)


#: kind -> (tokenizer family, prompt_format)
CAUSAL = {"opt": ("tiny_opt", "plain"), "llama": ("tiny_llama", "vicuna"), "gpt2": ("tiny_opt", "plain")}


def saved_causal(kind: str, folder):
    """A random ``AutoModelForCausalLM`` of ``kind`` saved with its tokenizer into ``folder``."""
    family = CAUSAL[kind][0]
    shutil.copytree(tokenizer_dir(family), folder)
    (folder / "config.json").unlink()
    vocab = json.loads((tokenizer_dir(family) / "config.json").read_text())["vocab_size"]
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(causal_config(kind, vocab)).eval()
    model.save_pretrained(folder)
    return folder


def saved_t5(folder, untied_head: bool = True):
    """A random Flan-T5-shaped model saved into ``folder``; with ``untied_head`` the files hold an
    ``lm_head`` of its own and the config says ``tie_word_embeddings: false`` (as every Flan-T5)."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(tokenizer_dir("tiny_flan_t5"), folder)
    vocab = json.loads((folder / "config.json").read_text())["vocab_size"]
    (folder / "config.json").unlink()
    torch.manual_seed(0)
    config = T5Config(vocab_size=vocab, d_model=32, d_ff=64, d_kv=8, num_layers=2, num_heads=4,
                      feed_forward_proj="gated-gelu", dropout_rate=0.0, decoder_start_token_id=0, pad_token_id=0,
                      eos_token_id=1, tie_word_embeddings=not untied_head)
    T5ForConditionalGeneration(config).save_pretrained(folder)
    if untied_head:
        weights = load_file(folder / "model.safetensors")
        weights["lm_head.weight"] = torch.randn(vocab, 32, generator=torch.Generator().manual_seed(5))
        save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
        data = json.loads((folder / "config.json").read_text())
        data["tie_word_embeddings"] = False
        (folder / "config.json").write_text(json.dumps(data))
    return folder


def build(name: str, **options):
    from mm_core.registry import get_registry

    return get_registry().resolve("llms", name).from_config(options).eval()


def image_batch(llm, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-padded prompts with one image each; placeholder rows replaced by fixed random 'image
    features' as the composing model does. Returns ids, embeddings and the mask."""
    encoded = [llm.encode_prompt([{"from": "user", "value": f"{IMAGE_MARK} {p}"}], N) for p in prompts]
    batch = llm.collate(encoded, padding_side="left")
    embeds = llm.embed_tokens(batch["input_ids"])
    where = batch["input_ids"] == llm.image_token_id
    features = torch.randn(int(where.sum()), embeds.shape[-1], generator=torch.Generator().manual_seed(1))
    return batch["input_ids"], embeds.masked_scatter(where.unsqueeze(-1), features), batch["attention_mask"]


# -- numbers against the bare transformers models ----------------------------------------------
@pytest.mark.parametrize("kind", sorted(CAUSAL))
def test_causal_logits_and_greedy_tokens_equal_the_bare_model(kind, tmp_path):
    folder = saved_causal(kind, tmp_path / kind)
    llm = build("hf_causal_lm", model=str(folder), prompt_format=CAUSAL[kind][1])
    reference = AutoModelForCausalLM.from_pretrained(folder).eval()
    ids, embeds, mask = image_batch(llm, ["a photo of", "Question: what colour is the big square? Short answer:"])
    text_rows = ids != llm.image_token_id
    assert torch.equal(embeds[text_rows], reference.get_input_embeddings()(ids.masked_fill(~text_rows, 0))[text_rows])
    with torch.no_grad():
        mine = llm(embeds, mask).logits
        theirs = reference(inputs_embeds=embeds, attention_mask=mask).logits
    assert mine.shape == theirs.shape and (mine - theirs)[mask.bool()].abs().max() <= 1e-5
    for row in range(ids.shape[0]):  # batch of one each: no padding in the hand-written loop
        keep = mask[row].bool()
        tokens = greedy_by_hand(reference, embeds[row:row + 1, keep], llm.stop_token_ids, steps=8)
        assert len(tokens) >= 1
        expected = llm.tokenizer.decode(tokens, skip_special_tokens=True).strip()
        assert llm.generate(embeds[row:row + 1, keep], mask[row:row + 1, keep], max_new_tokens=8,
                            suppress_tokens=None) == [expected]
    batched = llm.generate(embeds, mask, max_new_tokens=8, suppress_tokens=None)
    assert batched == [llm.generate(embeds[r:r + 1, mask[r].bool()], mask[r:r + 1, mask[r].bool()],
                                    max_new_tokens=8, suppress_tokens=None)[0] for r in range(2)]


def greedy_by_hand(model, embeds: torch.Tensor, stops: list[int], steps: int) -> list[int]:
    """Argmax decoding by re-running the whole sequence each step (no cache, no generate())."""
    tokens: list[int] = []
    with torch.no_grad():
        for _ in range(steps):
            logits = model(inputs_embeds=embeds).logits[0, -1]
            token = int(logits.argmax())
            tokens.append(token)
            if token in stops:
                break
            embeds = torch.cat([embeds, model.get_input_embeddings()(torch.tensor([[token]]))], dim=1)
    return tokens


def test_seq2seq_logits_and_greedy_tokens_equal_the_bare_t5(tmp_path):
    folder = saved_t5(tmp_path / "t5", untied_head=False)
    llm = build("hf_seq2seq", model=str(folder))
    reference = T5ForConditionalGeneration.from_pretrained(folder).eval()
    assert llm.is_encoder_decoder
    conversations = [[{"from": "user", "value": f"{IMAGE_MARK} Question: what is it? Short answer:"},
                      {"from": "assistant", "value": "a red circle"}],
                     [{"from": "user", "value": f"{IMAGE_MARK} a photo of"}, {"from": "assistant", "value": "two dogs"}]]
    batch = llm.collate([llm.encode_conversation(c, N) for c in conversations])
    embeds = llm.embed_tokens(batch["input_ids"])
    with torch.no_grad():
        mine = llm(embeds, batch["attention_mask"], labels=batch["labels"])
        theirs = reference(inputs_embeds=embeds, attention_mask=batch["attention_mask"], labels=batch["labels"])
    assert (mine.logits - theirs.logits).abs().max() <= 1e-5 and abs(mine.loss - theirs.loss) <= 1e-5
    ids, embeds, mask = image_batch(llm, ["a photo of", "Question: what colour is the big square? Short answer:"])
    with torch.no_grad():
        tokens = reference.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=8, min_new_tokens=3,
                                    do_sample=False, num_beams=1, eos_token_id=1, pad_token_id=0)
    expected = [t.strip() for t in llm.tokenizer.batch_decode(tokens, skip_special_tokens=True)]
    assert llm.generate(embeds, mask, max_new_tokens=8, min_new_tokens=3) == expected
    assert all(expected)


# -- the layouts, re-derived from the tokenizer -------------------------------------------------
def test_plain_layout_is_blip2_opt(tmp_path):
    llm = build("hf_causal_lm", model="mm_qwen_llm:assets/tiny_opt", random_init=True)
    tok = llm.tokenizer
    conversation = [{"from": "user", "value": f"{IMAGE_MARK}\na photo of"}, {"from": "assistant", "value": "a red circle"}]
    encoded = llm.encode_conversation(conversation, N)
    whole = tok("a photo of a red circle\n").input_ids
    assert whole[0] == tok.bos_token_id and tok.convert_ids_to_tokens(whole[-1]) == "Ċ"
    prompt_length = len(tok("a photo of").input_ids)  # LAVIS' prompt_length (BOS included)
    assert encoded["input_ids"] == [llm.image_token_id] * N + whole  # placeholders before BOS
    assert encoded["labels"] == [IGNORE_INDEX] * (N + prompt_length) + whole[prompt_length:]
    assert llm.encode_prompt(conversation[:1], N) == [llm.image_token_id] * N + tok("a photo of").input_ids
    newline = tok("\n", add_special_tokens=False).input_ids
    assert llm.stop_token_ids == [tok.eos_token_id, *newline]  # BLIP-2 OPT stops at "\n"
    empty = llm.encode_conversation([{"from": "user", "value": IMAGE_MARK}, {"from": "assistant", "value": "a dog"}], N)
    assert empty["labels"][N:] == tok("a dog\n").input_ids  # no prompt: LAVIS masks nothing, BOS included
    batch = llm.collate([encoded, empty])
    with torch.no_grad():
        out = llm(llm.embed_tokens(batch["input_ids"]), batch["attention_mask"], labels=batch["labels"])
    logits, labels = out.logits[:, :-1], batch["labels"][:, 1:]
    picked = labels != IGNORE_INDEX
    by_hand = -torch.log_softmax(logits[picked], -1).gather(1, labels[picked][:, None]).mean()
    assert torch.allclose(out.loss, by_hand, atol=1e-6)


def test_vicuna_layout_is_instructblip():
    llm = build("hf_causal_lm", model="mm_qwen_llm:assets/tiny_llama", random_init=True, prompt_format="vicuna")
    tok = llm.tokenizer
    assert tok.pad_token_id == tok.eos_token_id  # LLaMA has no pad token
    conversation = [{"from": "user", "value": f"{IMAGE_MARK} Write a short description for the image."},
                    {"from": "assistant", "value": "a red circle"}]
    encoded = llm.encode_conversation(conversation, N)
    text_input = tok("Write a short description for the image.").input_ids  # with BOS
    text_output = tok("a red circle").input_ids[1:] + [tok.eos_token_id]  # LAVIS: output ids without BOS, + eos
    assert text_input[0] == tok.bos_token_id
    assert encoded["input_ids"] == [llm.image_token_id] * N + text_input + text_output
    assert encoded["labels"] == [IGNORE_INDEX] * (N + len(text_input)) + text_output
    assert llm.stop_token_ids == [tok.eos_token_id]
    capped = build("hf_causal_lm", model="mm_qwen_llm:assets/tiny_llama", random_init=True, prompt_format="vicuna",
                   max_answer_len=2).encode_conversation(conversation, N)
    assert capped["input_ids"] == [llm.image_token_id] * N + text_input + text_output[:2]
    # LAVIS tokenizes the input with truncation_side="left" to max_txt_len (BOS kept) and the answer after it
    cut = llm.encode_conversation(conversation, N, max_len=N + 4)
    assert cut["input_ids"] == [llm.image_token_id] * N + text_input[:1] + text_input[-3:] + text_output
    assert cut["labels"] == [IGNORE_INDEX] * (N + 4) + text_output
    lavis_side = tok.truncation_side
    tok.truncation_side = "left"
    assert tok("Write a short description for the image.", truncation=True, max_length=4).input_ids == \
        text_input[:1] + text_input[-3:]
    tok.truncation_side = lavis_side


def test_seq2seq_layout_is_blip2_t5():
    llm = build("hf_seq2seq", model="mm_qwen_llm:assets/tiny_flan_t5", random_init=True)
    tok = llm.tokenizer
    conversation = [{"from": "user", "value": f"{IMAGE_MARK} Question: what is it? Short answer:"},
                    {"from": "assistant", "value": "a red circle"}]
    encoded = llm.encode_conversation(conversation, N)
    assert encoded["input_ids"] == [llm.image_token_id] * N + tok("Question: what is it? Short answer:").input_ids
    assert encoded["labels"] == tok("a red circle").input_ids and encoded["labels"][-1] == tok.eos_token_id
    assert llm.encode_prompt(conversation[:1], N) == encoded["input_ids"]
    short = llm.encode_conversation([{"from": "user", "value": IMAGE_MARK}, {"from": "assistant", "value": "no"}], N)
    batch = llm.collate([encoded, short])
    assert batch["labels"].shape == (2, len(encoded["labels"])) and batch["input_ids"].shape[1] == len(encoded["input_ids"])
    assert batch["labels"][1].tolist() == short["labels"] + [IGNORE_INDEX] * (len(encoded["labels"]) - len(short["labels"]))
    with pytest.raises(Exception, match="prompt_format 'vicuna'"):
        build("hf_seq2seq", model="mm_qwen_llm:assets/tiny_flan_t5", random_init=True, prompt_format="vicuna")


# -- precision and Flan-T5's head ---------------------------------------------------------------
@pytest.mark.parametrize("random_init", [True, False])
def test_t5_wo_stays_fp32_under_bf16(random_init, tmp_path):
    source = "mm_qwen_llm:assets/tiny_flan_t5" if random_init else str(saved_t5(tmp_path / "t5"))
    llm = build("hf_seq2seq", model=source, random_init=random_init, dtype="bfloat16")
    dtypes = {name: p.dtype for name, p in llm.named_parameters()}
    wo = [n for n in dtypes if ".wo." in n]
    assert wo and all(dtypes[n] == torch.float32 for n in wo)
    assert all(dtype == torch.bfloat16 for n, dtype in dtypes.items() if n not in wo)
    batch = llm.collate([llm.encode_conversation([{"from": "user", "value": "hi"}, {"from": "assistant", "value": "yes"}], N)])
    with torch.no_grad():
        assert torch.isfinite(llm(llm.embed_tokens(batch["input_ids"]), batch["attention_mask"], batch["labels"]).loss)


def test_flan_t5_lm_head_is_loaded_untied(tmp_path):
    from safetensors.torch import load_file

    folder = saved_t5(tmp_path / "flan")
    stored = load_file(folder / "model.safetensors")
    llm = build("hf_seq2seq", model=str(folder))
    head, shared = llm.model.get_output_embeddings().weight, llm.model.get_input_embeddings().weight
    assert head is not shared and torch.equal(head, stored["lm_head.weight"]) and torch.equal(shared, stored["shared.weight"])
    # the reference by hand: T5 v1.1 decoder states (no rescaling when untied) times the stored head
    assert not llm.model.config.tie_word_embeddings  # transformers 5's T5Config says True whatever the file says
    llm.model.tie_weights()  # as resizing or peft may call it: the head must stay its own
    assert llm.model.get_output_embeddings().weight is head
    reference = T5ForConditionalGeneration.from_pretrained(folder).eval()
    ids, embeds, mask = image_batch(llm, ["a photo of"])
    labels = torch.tensor([llm.tokenizer("a dog").input_ids])
    with torch.no_grad():
        mine = llm(embeds, mask, labels=labels).logits
        states = reference(inputs_embeds=embeds, attention_mask=mask, labels=labels, output_hidden_states=True)
        by_hand = states.decoder_hidden_states[-1] @ stored["lm_head.weight"].T
    assert not reference.config.scale_decoder_outputs and (mine - by_hand).abs().max() <= 1e-5
    tied = states.decoder_hidden_states[-1] @ stored["shared.weight"].T
    assert (tied - by_hand).abs().max() > 1e-3  # a tied head would compute something else
    exported = llm.export_merged(tmp_path / "exported")  # and a round trip through save_pretrained keeps it
    again = build("hf_seq2seq", model=str(exported))
    with torch.no_grad():
        assert (again(embeds, mask, labels=labels).logits - by_hand).abs().max() <= 1e-5
    random = build("hf_seq2seq", model="mm_qwen_llm:assets/tiny_flan_t5", random_init=True)  # untied in its config
    assert random.model.get_output_embeddings().weight is not random.model.get_input_embeddings().weight


# -- training switches -------------------------------------------------------------------------
@pytest.mark.parametrize("name,model,targets", [("hf_causal_lm", "tiny_opt", ("q_proj", "v_proj")),
                                                ("hf_causal_lm", "tiny_llama", ("q_proj", "v_proj")),
                                                ("hf_seq2seq", "tiny_flan_t5", (".q.", ".v."))])
def test_freezing_lora_and_gradient_checkpointing(name, model, targets):
    base = {"model": f"mm_qwen_llm:assets/{model}", "random_init": True}
    assert not any(p.requires_grad for p in build(name, **base).parameters())
    assert all(p.requires_grad for p in build(name, **base, freeze=False).parameters())
    lora = build(name, **base, lora=True, lora_r=2, gradient_checkpointing=True)
    trainable = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n and any(t in n for t in targets) for n in trainable)
    inner = lora.model.get_base_model()
    assert getattr(inner, "is_activation_checkpointing", None) or inner.is_gradient_checkpointing
    lora.train()
    batch = lora.collate([lora.encode_conversation([{"from": "user", "value": f"{IMAGE_MARK} hi"},
                                                    {"from": "assistant", "value": "a red circle"}], N)])
    lora(lora.embed_tokens(batch["input_ids"]), batch["attention_mask"], batch["labels"]).loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in lora.named_parameters() if "lora_B" in n)


def test_placeholder_outside_the_vocabulary_is_never_looked_up():
    llm = build("hf_causal_lm", model="mm_qwen_llm:assets/tiny_llama", random_init=True)
    rows = llm.model.get_input_embeddings().weight.shape[0]
    assert llm.image_token == "<image>" and llm.image_token_id >= rows  # added to the tokenizer only
    ids = torch.tensor([[llm.image_token_id, 5]])
    assert torch.equal(llm.embed_tokens(ids)[0, 0], llm.model.get_input_embeddings().weight[llm.pad_token_id])


# -- the contract, over every layout ------------------------------------------------------------
@pytest.mark.parametrize("name,options", [
    ("hf_causal_lm", {"model": "mm_qwen_llm:assets/tiny_opt"}),
    ("hf_causal_lm", {"model": "mm_qwen_llm:assets/tiny_llama", "prompt_format": "vicuna"}),
    ("hf_causal_lm", {"model": "mm_qwen_llm:assets/tiny_llama", "prompt_format": "plain"}),
    ("hf_seq2seq", {"model": "mm_qwen_llm:assets/tiny_flan_t5"}),
])
def test_backends_pass_the_contract(name, options):
    llm = check_llm_backend(name, {**options, "random_init": True}, num_image_tokens=N)
    assert llm.is_encoder_decoder == (name == "hf_seq2seq")


def test_tiny_assets_are_regenerated_byte_for_byte(capsys):
    from mm_qwen_llm.tiny_hf import main

    assert main(["--check"]) == 0, capsys.readouterr().out
