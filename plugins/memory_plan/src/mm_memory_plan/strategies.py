"""Bytes of the model states (weights, gradients, optimizer states) on each GPU, per strategy.

With P parameters of which T are trainable, N data-parallel processes and L the largest layer
(:func:`~mm_memory_plan.model_facts.largest_layer_params`):

=====================  ===========================  =================================  ===============
strategy               weights                      gradients                          optimizer
=====================  ===========================  =================================  ===============
DDP (runner_base)      P in their dtypes            T in their dtypes (+ DDP's bucket   2 T (AdamW's
                                                    copy when N > 1)                    moments, dtype)
ZeRO-1                 2 P                          2 T + 4 T / N                       12 T / N
ZeRO-2                 2 P                          6 T / N                             12 T / N
ZeRO-2 + offload       2 P                          0 (CPU: T max(4N, 16) 1.5)          0
ZeRO-3                 2 L + 2 P / N                2 L + 4 T / N                       12 T / N
ZeRO-3 + offload opt.  2 L + 2 P / N                2 L (CPU: 16 T 1.5)                 0
ZeRO-3 + offload all   2 L                          2 L (CPU: (2 P + 16 T) 1.5)         0
pipeline, S stages     ZeRO-1 over the largest stage's parameters, N / S data-parallel copies
=====================  ===========================  =================================  ===============

The DeepSpeed rows are DeepSpeed's own accounting of bf16/fp16 training (its
``estimate_zero2_model_states_mem_needs`` / ``estimate_zero3_model_states_mem_needs``): 16-bit
weights (2 bytes), 16-bit gradients (2), and per trainable parameter an fp32 gradient (4), fp32
master weight (4) and two fp32 Adam moments (8) — the last 12 counted under "optimizer". With every
parameter trainable they equal DeepSpeed's estimators exactly; frozen parameters hold only their
16-bit weights (ZeRO-3 partitions those too). CPU offload bytes are DeepSpeed's (with its 1.5 buffer
factor), on one node.
"""

from __future__ import annotations

from dataclasses import dataclass

from mm_memory_plan.model_facts import Count, ModelFacts

#: DeepSpeed's additional_buffer_factor for offloaded (CPU) memory.
CPU_BUFFER_FACTOR = 1.5


@dataclass
class Row:
    """Model-state bytes per GPU (and per node in CPU memory) of one strategy."""

    name: str
    weights: int
    gradients: int
    optimizer: int
    cpu: int = 0
    stages: int = 1  # pipeline stages (activations are per stage)

    @property
    def states(self) -> int:
        return self.weights + self.gradients + self.optimizer


def ddp(facts: ModelFacts, world: int) -> Row:
    """Plain PyTorch (runner_base / runner_iter): weights, gradients and AdamW's two moments in
    the parameters' own dtypes; DDP keeps its gradient buckets beside ``.grad`` when N > 1."""
    total = facts.total
    gradients = total.trainable_bytes * (2 if world > 1 else 1)
    return Row("DDP", total.bytes, gradients, 2 * total.trainable_bytes)


def zero(stage: int, facts: ModelFacts, world: int, offload_optimizer: bool = False,
         offload_params: bool = False) -> Row:
    """A ZeRO stage (1, 2 or 3) under DeepSpeed's bf16/fp16 accounting (the module docstring)."""
    total, largest = facts.total, facts.largest_layer_params
    p, t = total.params, total.trainable
    name = f"ZeRO-{stage}" + (" + offload optimizer" if offload_optimizer and not offload_params else "") \
        + (" + offload optimizer and params" if offload_params else "")
    if stage in (1, 2):
        if offload_optimizer:
            return Row(name, 2 * p, 0, 0, cpu=_cpu(t * max(4 * world, 16)))
        gradients = 2 * t + int(4 * t / world) if stage == 1 else int(6 * t / world)
        return Row(name, 2 * p, gradients, int(12 * t / world))
    if offload_params:
        return Row(name, 2 * largest, 2 * largest, 0, cpu=_cpu(2 * p + 16 * t))
    if offload_optimizer:
        return Row(name, 2 * largest + int(2 * p / world), 2 * largest, 0, cpu=_cpu(16 * t))
    return Row(name, 2 * largest + int(2 * p / world), 2 * largest + int(4 * t / world), int(12 * t / world))


def _cpu(bytes_: float) -> int:
    return int(bytes_ * CPU_BUFFER_FACTOR)


def stage_counts(facts: ModelFacts, stages: int) -> list[Count]:
    """Parameters of each pipeline stage: the decoder blocks split evenly (the first stages take one
    more when they do not divide), everything before them on the first stage, the final norm and
    LM head on the last."""
    blocks = facts.blocks
    out = [Count() for _ in range(stages)]
    per, extra = divmod(len(blocks), stages)
    start = 0
    for index in range(stages):
        end = start + per + (1 if index < extra else 0)
        for block in blocks[start:end]:
            out[index] += block
        start = end
    out[0] += facts.pre
    out[-1] += facts.post
    return out


def pipeline(facts: ModelFacts, world: int, stages: int) -> Row:
    """The largest stage under ZeRO-1 with ``world // stages`` data-parallel copies of each stage."""
    replicas = max(1, world // stages)
    rows = [Row(f"pipeline, {stages} stages", 2 * c.params, 2 * c.trainable + int(4 * c.trainable / replicas),
                int(12 * c.trainable / replicas), stages=stages) for c in stage_counts(facts, stages)]
    return max(rows, key=lambda row: row.states)


def all_rows(facts: ModelFacts, world: int, stages: int) -> list[Row]:
    """Every strategy the plan prints, in order."""
    rows = [ddp(facts, world), zero(1, facts, world), zero(2, facts, world), zero(2, facts, world, True),
            zero(3, facts, world), zero(3, facts, world, True), zero(3, facts, world, True, True)]
    if facts.blocks and stages > 1:
        rows.append(pipeline(facts, world, stages))
    return rows
