"""The plan as text: parameters by module, a table of GiB per GPU by strategy, and a warning when
the strategy of the run needs more than the device has."""

from __future__ import annotations

from mm_memory_plan.plan import GIB, Plan


def count(n: int) -> str:
    """``7721324544`` -> ``7.72 B``."""
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return str(n)


def gib(n: int) -> str:
    return f"{n / GIB:.2f}" if n >= GIB / 100 or n == 0 else f"{n / GIB:.2e}"


def parameter_lines(plan: Plan) -> list[str]:
    total = plan.facts.total
    lines = [f"  parameters: {count(total.params)} ({total.params:,}), trainable {count(total.trainable)} "
             f"({total.trainable:,})"]
    width = max(len(name) for name in plan.facts.modules)
    for name, c in plan.facts.modules.items():
        state = "trainable" if c.trainable == c.params else ("frozen" if c.trainable == 0 else
                                                           f"trainable {count(c.trainable)}")
        lines.append(f"    {name:<{width}}  {count(c.params):>9}  {gib(c.bytes):>7} GiB  {state}")
    return lines


def table_lines(plan: Plan) -> list[str]:
    s = plan.settings
    configured = s.configured(plan.rows)
    lines = [f"  GiB per GPU{'':<31}weights  gradients  optimizer  activations  total  | with checkpointing  CPU/node"]
    for row in plan.rows:
        mark = "  <- this run" if row is configured else ""
        lines.append(
            f"    {row.name:<38}{gib(row.weights):>7}  {gib(row.gradients):>9}  {gib(row.optimizer):>9}  "
            f"{gib(plan.activation_bytes(row, False)):>11}  {gib(plan.total(row, False)):>6}  | "
            f"{gib(plan.total(row, True)):>18}  {gib(row.cpu) if row.cpu else '-':>8}{mark}")
    return lines


def activation_lines(plan: Plan) -> list[str]:
    s, acts, llm = plan.settings, plan.activations, plan.facts.llm
    if llm is None:
        return ["  activations: not estimated (no causal LM found in the model)"]
    if acts is None:
        return ["  activations: not estimated (set model.max_txt_len, the token budget of a sample)"]
    lines = [f"  activations (micro-batch {s.batch} x {s.seq_len} tokens, {'16' if s.mixed_precision else llm.element_size * 8}"
             f"-bit): {gib(acts.full)} GiB, {gib(acts.checkpointed)} GiB with gradient checkpointing "
             f"({'on' if s.checkpointing else 'off'} in this config); the loss's log-softmax {gib(acts.loss)} GiB"]
    trainable_before = [n for n, c in plan.facts.modules.items() if c.trainable and not llm.path.startswith(n)]
    towers = [n for n in trainable_before if plan.facts.modules[n].params > 0.05 * plan.facts.total.params]
    if towers:
        lines.append(f"  note: {', '.join(towers)} train(s); their activations are not in the estimate")
    return lines


def verdict_lines(plan: Plan) -> list[str]:
    s = plan.settings
    if s.gpu_bytes is None:
        return ["  device memory: unknown (no CUDA device): set run.plan_gpu_memory_gib or "
                "MM_PLAN_GPU_MEMORY_GIB (e.g. 24 or 80) to check the plan against a card"]
    row = s.configured(plan.rows)
    need = plan.total(row, s.checkpointing)
    fits = [r.name for r in plan.rows if plan.total(r, False) <= s.gpu_bytes]
    fits_ckpt = [r.name for r in plan.rows if plan.total(r, True) <= s.gpu_bytes and r.name not in fits]
    lines = [f"  device memory: {gib(s.gpu_bytes)} GiB ({s.gpu_source}); fits: {', '.join(fits) or 'none'}"
             + (f"; with gradient checkpointing also: {', '.join(fits_ckpt)}" if fits_ckpt else "")]
    if need > s.gpu_bytes:
        lines.append(f"WARNING: this run ({s.runner}, {row.name}) needs about {gib(need)} GiB per GPU, more than "
                     f"the {gib(s.gpu_bytes)} GiB of the device: choose a strategy that fits, turn on gradient "
                     "checkpointing or lower run.batch_size_train / model.max_txt_len")
    return lines


def plan_lines(plan: Plan, title: str) -> list[str]:
    s = plan.settings
    head = (f"memory plan: {title}; {s.world} process{'es' * (s.world > 1)}, runner {s.runner}"
            + (f" (ZeRO-{s.zero_stage})" if s.zero_stage is not None else "")
            + ", DeepSpeed rows in bf16/fp16 (docs/distributed.md, \"Memory plan\")")
    return [head, *parameter_lines(plan), *activation_lines(plan), *table_lines(plan), *verdict_lines(plan)]
