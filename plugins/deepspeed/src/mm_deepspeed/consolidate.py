"""Turn a DeepSpeed ZeRO checkpoint folder into a plain safetensors file of fp32 weights.

The DeepSpeed runner already writes ``model.safetensors`` into every mm checkpoint. This is for
bare DeepSpeed folders, such as ``checkpoints/deepspeed`` or a MiniGPT4-Qwen output directory.
DeepSpeed's own ``zero_to_fp32`` assembles the partitions (ZeRO 1-3). Frozen parameters are
left out unless asked for, matching what mm checkpoints hold::

    mmrun consolidate-deepspeed CHECKPOINT_DIR [--tag TAG] -o weights.safetensors
    python -m mm_deepspeed.consolidate CHECKPOINT_DIR [--tag TAG] -o weights.safetensors   (the same)

The result loads with ``model.load_checkpoint(path)``, ``run.resume_ckpt_path`` for evaluation
and ``mmrun chat --checkpoint``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from mm_core.errors import CheckpointError, MMError


def consolidate_deepspeed_checkpoint(checkpoint_dir: str | Path, tag: str | None = None,
                                     include_frozen: bool = False) -> dict[str, torch.Tensor]:
    """fp32 ``state_dict`` of a DeepSpeed ZeRO checkpoint (``tag`` or the folder's ``latest``)."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    folder = Path(checkpoint_dir).expanduser()
    if not folder.is_dir():
        raise CheckpointError(f"{folder} is not a directory", hint="give the folder that holds the checkpoint tags")
    if tag is None and not (folder / "latest").is_file():
        raise CheckpointError(f"{folder} has no 'latest' file", hint="name the checkpoint with --tag")
    name = tag or (folder / "latest").read_text().strip()
    if any((folder / name).glob("layer_*-model_states.pt")):
        raise CheckpointError(
            f"{folder / name} is a pipeline checkpoint (per-layer files): zero_to_fp32 does not read it",
            hint=f"the deepspeed_pipe_runner wrote its consolidated weights to {folder.parent / name}/model.safetensors",
        )
    try:
        state = get_fp32_state_dict_from_zero_checkpoint(str(folder), tag=tag,
                                                         exclude_frozen_parameters=not include_frozen)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        raise CheckpointError(
            f"cannot consolidate {folder} (tag {tag or 'latest'}): {type(exc).__name__}: {exc}",
            hint="zero_to_fp32 reads ZeRO stage 1-3 checkpoints; a stage-0 checkpoint's model states file "
            "already holds the full weights",
        ) from exc
    return {k: v.contiguous().float() for k, v in state.items()}


def save_safetensors(state: dict[str, torch.Tensor], path: str | Path) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata={"format": "pt"})
    return path


def main(argv: list[str] | None = None) -> int:
    """``mmrun consolidate-deepspeed``: write the fp32 trainable weights of a ZeRO checkpoint."""
    parser = argparse.ArgumentParser(prog="mmrun consolidate-deepspeed",
                                     description="DeepSpeed ZeRO checkpoint -> fp32 safetensors (trainable weights)")
    parser.add_argument("checkpoint_dir", help="folder holding the tags (and DeepSpeed's 'latest' file)")
    parser.add_argument("--tag", default=None, help="checkpoint tag (default: the folder's 'latest')")
    parser.add_argument("-o", "--output", required=True, help="the .safetensors file to write")
    parser.add_argument("--include-frozen", action="store_true", help="also write frozen parameters")
    args = parser.parse_args(argv)
    try:
        state = consolidate_deepspeed_checkpoint(args.checkpoint_dir, args.tag, args.include_frozen)
    except MMError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    path = save_safetensors(state, args.output)
    print(f"wrote {len(state)} tensors ({sum(v.numel() for v in state.values()):,} values) to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
