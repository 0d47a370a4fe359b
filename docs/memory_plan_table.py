"""Render the memory-plan table of docs/distributed.md with mm-plugin-memory-plan's own code.

    python docs/memory_plan_table.py          # print the table
    python docs/memory_plan_table.py --write  # update the section in docs/distributed.md

The LLMs are built on the meta device from a config.json with Qwen-7B-Chat's and Qwen-14B-Chat's
dims (their Hub config.json: hidden 4096 / 5120, 32 / 40 layers and heads, MLP 11008 / 13696 — Qwen-1
writes twice that as intermediate_size — vocab 151936 / 152064, untied head), written as a Qwen2
config, whose tensors are the same as Qwen-1's (q/k/v with bias, the rest without), so no remote
code is needed; the tokenizer is the tiny one of mm_qwen_llm (it does not change any size).
tests/memory_plan/test_docs_table.py fails when the docs and this output disagree.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

from omegaconf import OmegaConf

BEGIN, END = "<!-- memory-plan:begin -->", "<!-- memory-plan:end -->"
DOC = Path(__file__).with_name("distributed.md")
QWEN_DIMS = {
    "qwen7b_chat": {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
                    "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 151936},
    "qwen14b_chat": {"hidden_size": 5120, "intermediate_size": 13696, "num_hidden_layers": 40,
                     "num_attention_heads": 40, "num_key_value_heads": 40, "vocab_size": 152064},
}
WORLD, BATCH, STAGES = 8, 4, 4
STRATEGIES = ("DDP", "ZeRO-2", "ZeRO-3", "ZeRO-3 + offload optimizer and params", f"pipeline, {STAGES} stages")


def llm_dir(model_type: str, root: Path) -> Path:
    """A directory holding a config.json with the dims of ``model_type``'s LLM and the tiny tokenizer."""
    tiny = resources.files("mm_qwen_llm").joinpath("assets/tiny_qwen2")
    folder = root / model_type
    folder.mkdir(parents=True, exist_ok=True)
    config = json.loads(tiny.joinpath("config.json").read_text())
    config.update(QWEN_DIMS[model_type], max_position_embeddings=8192, tie_word_embeddings=False)
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(str(tiny.joinpath(name)), folder / name)
    return folder


def plan_for(model_type: str, train_llm: bool, root: Path):
    from mm_core.config.loader import load_model_defaults
    from mm_memory_plan.model_facts import build_on_meta, read_facts
    from mm_memory_plan.plan import Plan, PlanSettings

    model = load_model_defaults("minigpt4qwen", model_type).model
    model.llm_model, model.freeze_llm = str(llm_dir(model_type, root)), not train_llm
    cfg = OmegaConf.create({"model": model, "run": {"batch_size_train": BATCH, "plan_world_size": WORLD,
                                                   "plan_pipeline_stages": STAGES, "amp": True}})
    return Plan.build(read_facts(build_on_meta(cfg.model)), PlanSettings.from_config(cfg))


def render() -> str:
    from mm_memory_plan.plan import GIB

    lines = [BEGIN, "", "| model_type | LLM | strategy | model states | + activations | with checkpointing | 24 GB | 80 GB |",
             "|---|---|---|---:|---:|---:|:-:|:-:|"]
    with tempfile.TemporaryDirectory() as root:
        for model_type in QWEN_DIMS:
            for train_llm in (False, True):
                plan = plan_for(model_type, train_llm, Path(root))
                for row in (r for r in plan.rows if r.name in STRATEGIES):
                    full, ckpt = plan.total(row, False) / GIB, plan.total(row, True) / GIB
                    fits = ["yes" if full <= size else ("ckpt" if ckpt <= size else "no") for size in (24, 80)]
                    lines.append(f"| {model_type} | {'trained' if train_llm else 'frozen'} | {row.name} | "
                                 f"{row.states / GIB:.1f} | {full:.1f} | {ckpt:.1f} | {fits[0]} | {fits[1]} |")
    return "\n".join([*lines, "", END])


def current_section(text: str) -> str:
    start, end = text.index(BEGIN), text.index(END) + len(END)
    return text[start:end]


if __name__ == "__main__":
    if "--write" in sys.argv:
        text = DOC.read_text()
        DOC.write_text(text.replace(current_section(text), render()))
    else:
        print(render())
