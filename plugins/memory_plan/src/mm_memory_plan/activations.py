"""Activation estimate: what backward keeps of the causal LM's forward, for one micro-batch of
``batch`` sequences of ``max_txt_len`` tokens (the token budget, image placeholders included).

Per decoder block and token, with hidden size h, key/value width h_kv (grouped-query attention),
MLP width i and e bytes per activation element (2 in bf16/fp16, 4 in fp32), counted from what
autograd saves in a Llama/Qwen2-style block under PyTorch's scaled-dot-product attention:

* always (backward runs through the block to reach trainable parts before it, or its own):
  the two RMSNorm inputs, upcast to fp32 (2 h x 4 bytes); attention's q, k, v and output
  ((2 h + 2 h_kv) e); the MLP's activation input and the two factors of its product (3 i e);
* when the block's own weights train (full fine-tuning or LoRA), the inputs of its linear layers
  too: the two normalised inputs and the down projection's input ((2 h + i) e);
* the loss: the fp32 log-softmax over the vocabulary V (4 V bytes per token).

With gradient checkpointing only each block's input (h e) is kept, plus one block's full set while
it is recomputed. Nothing is kept when no parameter before or inside the LLM trains. The vision tower
and Q-Former add nothing when frozen (their outputs need no gradient); when they train, their
activations are not in this estimate (the plan says so).
"""

from __future__ import annotations

from dataclasses import dataclass

from mm_memory_plan.model_facts import ModelFacts


@dataclass
class Activations:
    """Bytes kept for backward on one GPU, without and with gradient checkpointing."""

    full: int
    checkpointed: int
    per_block: int  # one block, full set
    loss: int


def block_bytes_per_token(facts: ModelFacts, element_size: int) -> int:
    llm = facts.llm
    kept = 2 * llm.hidden * 4 + (2 * llm.hidden + 2 * llm.kv_heads * (llm.hidden // llm.heads)) * element_size \
        + 3 * llm.intermediate * element_size
    if llm.trainable:
        kept += (2 * llm.hidden + llm.intermediate) * element_size
    return kept


def estimate(facts: ModelFacts, batch: int, seq_len: int, element_size: int) -> Activations | None:
    """The estimate for ``batch`` x ``seq_len`` tokens, or ``None`` when the model has no causal LM."""
    llm = facts.llm
    if llm is None:
        return None
    if not llm.trainable and facts.pre.trainable == 0:
        return Activations(0, 0, 0, 0)
    tokens = batch * seq_len
    per_block = tokens * block_bytes_per_token(facts, element_size)
    loss = tokens * llm.vocab * 4
    full = llm.layers * per_block + loss
    checkpointed = llm.layers * tokens * llm.hidden * element_size + per_block + loss
    return Activations(full, checkpointed, per_block, loss)


def pipeline_stage(activations: Activations, facts: ModelFacts, stages: int, checkpointed: bool) -> int:
    """The first stage's activations under the 1F1B schedule: its share of the blocks for up to
    ``stages`` micro-batches in flight (the last stage holds one, plus the loss)."""
    layers = facts.llm.layers
    share = -(-layers // stages)
    kept_per_block = activations.per_block if not checkpointed else \
        (activations.checkpointed - activations.per_block - activations.loss) // max(layers, 1)
    first = share * kept_per_block * stages + (activations.per_block if checkpointed else 0)
    last = share * kept_per_block + activations.loss + (activations.per_block if checkpointed else 0)
    return max(first, last)
