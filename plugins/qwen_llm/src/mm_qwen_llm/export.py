"""``mmrun export-lora``: merge a checkpoint's LoRA adapters into a plain Hugging Face model.

    mmrun export-lora --config run.yaml --checkpoint CKPT --out DIR [--options k=v ...]

Builds the model of ``run.yaml`` (e.g. ``minigpt4qwen`` with ``get_lora: true``), loads the
checkpoint (adapters + projection), merges the adapters into the LLM's weights
(``peft``'s ``merge_and_unload``) and writes the LLM with its tokenizer to ``DIR``: a directory
``AutoModelForCausalLM.from_pretrained`` loads with no peft. Use it as ``llm_model`` with
``get_lora: false``; the projection stays in the checkpoint.
"""

from __future__ import annotations

import argparse

from mm_core.errors import ConfigError


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="mmrun export-lora", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--checkpoint", default=None, help="mm checkpoint directory (or weights file)")
    parser.add_argument("--out", required=True, help="directory to write the merged model into")
    parser.add_argument("--options", nargs="*", default=[])
    args = parser.parse_args(argv)

    from mm_core.api import load_model_for_inference

    loaded = load_model_for_inference(args.config, args.options, args.checkpoint)
    model = loaded.model
    llm = getattr(model, "llm", model)
    if not hasattr(llm, "export_merged"):
        raise ConfigError(f"model '{loaded.config.model.arch}' has no Qwen LLM to export",
                          hint="export-lora works on models with the qwen backend (e.g. minigpt4qwen)")
    if not llm.has_lora:
        print("note: the model has no LoRA adapters (get_lora is false); writing the LLM as it is")
    out = llm.export_merged(args.out)
    print(f"wrote {out}")
    return 0
