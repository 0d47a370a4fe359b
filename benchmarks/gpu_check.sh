#!/usr/bin/env bash
# GPU check of the DeepSpeed runner: MiniGPT4-Qwen compositions (BLIP-2 tower + Q-Former ->
# projection -> Qwen2) trained with ZeRO-2 bf16 on one NVIDIA GPU. Prints samples/s, peak GPU
# memory, the loss and the MFU for each config, and writes them to $RESULTS/gpu_check.{json,md}.
# MFU = samples/s x the model's FLOPs per training sample (counted by torch.utils.flop_counter
# on one real forward + backward of the same config and batch, on the CPU) / the GPU's dense bf16
# peak (from its name for H200/H100/A100/L40S/L4/A10; PEAK_TFLOPS=<number> overrides).
#
#   bash benchmarks/gpu_check.sh            # from the repository root; about 3-6 minutes
#
# Configs (random init, offline: the data is rendered locally, nothing comes from the hub):
#   tiny  the `tiny` model type as in examples/minigpt4qwen_tiny.yaml (LLM trained)
#   mid   224 px images, a 12-layer ViT (384 wide), a 32-query Q-Former (256 wide), a Qwen2 LLM
#         of ~0.3B (1024 wide, 24 layers) trained fully: the
#         optimizer state is what ZeRO-2 partitions
#   mid_pipe  `mid` under the deepspeed_pipe_runner: torchrun with one process per GPU and as many
#         pipeline stages (1 on a one-GPU machine: DeepSpeed's pipeline engine, bf16, its checkpoints),
#         ZeRO-1 (the pipeline engine's limit); NGPU=<n> sets the processes
#
# Installing: the repository's code runs from source (PYTHONPATH, plugins named in
# MM_PLUGIN_MODULES), so only third-party packages are installed, and only those missing from the
# Python that runs this (a venv with --system-site-packages reuses a preinstalled CUDA torch).
# Without network access, preinstall what is missing, or carry the files and point pip at them:
#   pip download --no-deps -d wheels deepspeed hjson msgpack ninja py-cpuinfo einops nvidia-ml-py
#   PIP_NO_INDEX=1 PIP_FIND_LINKS=$PWD/wheels bash benchmarks/gpu_check.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${VENV:-/tmp/mm-gpu-venv}"
WORK="${WORK:-/tmp/mm-gpu-check}"
RESULTS="${RESULTS:-${OUT:-$ROOT/benchmarks/results}}"
STEPS="${STEPS:-30}"
CONFIGS="${CONFIGS:-tiny mid mid_pipe}"
NGPU="${NGPU:-$(nvidia-smi -L 2>/dev/null | wc -l | awk '{print ($1 > 0) ? $1 : 1}')}"
DEVICE="${DEVICE:-cuda}"   # DEVICE=cpu CONFIGS=tiny STEPS=10 checks the script itself on a CPU machine
START=$(date +%s)
mkdir -p "$WORK" "$RESULTS"

log() { echo "[gpu_check $(($(date +%s) - START))s] $*"; }

# -- environment ----------------------------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv --system-site-packages "$VENV"
fi
PY="$VENV/bin/python"
missing=()
for spec in "torch:torch" "torchvision:torchvision" "transformers:transformers>=4.45" "timm:timm>=1.0" \
            "peft:peft>=0.11" "tokenizers:tokenizers>=0.19" "safetensors:safetensors>=0.4" \
            "omegaconf:omegaconf>=2.3" "pluggy:pluggy>=1.5" "yaml:pyyaml>=6" "PIL:pillow>=10" "tqdm:tqdm" \
            "numpy:numpy"; do
  module="${spec%%:*}"; requirement="${spec#*:}"
  "$PY" -c "import $module" 2>/dev/null || missing+=("$requirement")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing: ${missing[*]}"
  "$PY" -m pip install -q "${missing[@]}" || { log "cannot install ${missing[*]} (no network? see the header)"; exit 2; }
fi
if ! "$PY" -c "import deepspeed" 2>/dev/null; then
  log "installing deepspeed (sdist built against this torch, no ops pre-compiled)"
  DS_BUILD_OPS=0 "$PY" -m pip install -q --no-build-isolation "deepspeed>=0.15" \
    || { log "cannot install deepspeed (no network? see the header)"; exit 2; }
fi
"$PY" - "$DEVICE" <<'EOF'
import sys, torch, deepspeed, transformers
assert sys.argv[1] == "cpu" or torch.cuda.is_available(), "no CUDA device visible"
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), deepspeed {deepspeed.__version__}, "
      f"transformers {transformers.__version__}, GPU {gpu}")
EOF
if [ "$DEVICE" = cpu ]; then export DS_ACCELERATOR=cpu; fi

# the deepspeed_runner is mm-plugin-deepspeed's (plugins/deepspeed), registered like the model plugins
export PYTHONPATH="$ROOT/core/src:$ROOT/plugins/blip2/src:$ROOT/plugins/blip_processors/src:$ROOT/plugins/qwen_llm/src:$ROOT/plugins/deepspeed/src${PYTHONPATH:+:$PYTHONPATH}"
export MM_PLUGIN_MODULES="mm_blip2.hooks,mm_blip_processors.hooks,mm_qwen_llm.hooks,mm_deepspeed.hooks" MM_DISABLE_PLUGIN_AUTOLOAD=1
export MM_CACHE_ROOT="$WORK/cache" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

# -- the mid-size LLM: the tiny tokenizer with a larger Qwen2 config ------------------------------
"$PY" - "$WORK/mid_qwen2" <<'EOF'
import json, shutil, sys
from importlib import resources
from pathlib import Path
target = Path(sys.argv[1])
shutil.rmtree(target, ignore_errors=True)
shutil.copytree(resources.files("mm_qwen_llm").joinpath("assets/tiny_qwen2"), target)
config = json.loads((target / "config.json").read_text())
config.update(hidden_size=1024, intermediate_size=2816, num_hidden_layers=24, num_attention_heads=16,
              num_key_value_heads=16)
(target / "config.json").write_text(json.dumps(config, indent=1))
EOF

# -- runs ---------------------------------------------------------------------------------------------
COMMON=(run.runner=deepspeed_runner "run.device=$DEVICE" run.max_epoch=1 "run.iters_per_epoch=$STEPS"
        "run.valid_splits=[]" run.log_freq=5 run.ckpt_freq=1 run.num_workers=2
        run.deepspeed_config.zero_optimization.stage=2 run.deepspeed_config.bf16.enabled=true
        run.deepspeed_config.gradient_clipping=1.0 run.deepspeed_config.steps_per_print=100000)
TINY=(model.freeze_llm=false run.batch_size_train=8)
MID=(model.freeze_llm=false run.batch_size_train=16 run.init_lr=1e-4 run.warmup_steps=5
     model.image_size=224 model.vision.embed_dim=384 model.vision.depth=12 model.vision.num_heads=6
     model.vision.patch_size=14 model.num_query_token=32 model.qformer.hidden_size=256
     model.qformer.num_attention_heads=4 model.qformer.intermediate_size=1024
     "model.llm_model=$WORK/mid_qwen2" datasets.minigpt4_instruction.vis_processor.train.image_size=224
     datasets.minigpt4_instruction.vis_processor.eval.image_size=224)

run_config() {
  local name="$1"; shift
  rm -rf "$WORK/out_$name"
  log "run $name"
  "$PY" "${LAUNCH[@]}" -m mm_core.engine.run --config examples/minigpt4qwen_tiny.yaml \
      --options "${COMMON[@]}" "run.output_dir=$WORK/out_$name" "$@" > "$WORK/$name.log" 2>&1 \
    || { tail -40 "$WORK/$name.log"; log "run $name FAILED"; return 1; }
}

status=0
LAUNCH=()  # how run_config starts Python's module (torchrun for the pipeline case)
for name in $CONFIGS; do
  if [ "$name" = tiny ]; then run_config tiny "${TINY[@]}" || status=1; fi
  if [ "$name" = mid ]; then run_config mid "${MID[@]}" || status=1; fi
  if [ "$name" = mid_pipe ]; then
    LAUNCH=(-m torch.distributed.run --standalone "--nproc_per_node=$NGPU")
    run_config mid_pipe "${MID[@]}" run.runner=deepspeed_pipe_runner "run.num_stages=$NGPU" \
      run.deepspeed_config.zero_optimization.stage=1 || status=1
    LAUNCH=()
  fi
done

# -- FLOPs per training sample (forward + backward of one batch, counted on the CPU) ----------------
count_flops() {
  local name="$1"; shift
  log "count FLOPs of $name"
  "$PY" - "$WORK/flops_$name.json" "${COMMON[@]}" "run.output_dir=$WORK/flops_out" "$@" <<'EOF' \
    > "$WORK/flops_$name.log" 2>&1 || { tail -20 "$WORK/flops_$name.log"; log "FLOP count of $name FAILED"; }
import json, sys
from torch.utils.flop_counter import FlopCounterMode
from mm_core.config.loader import load_config
from mm_core.engine.data import TrainStream
from mm_core.engine.settings import RunSettings
from mm_core.registry import get_registry
options = [o for o in sys.argv[2:] if not o.startswith(("run.deepspeed_config", "run.device=", "run.runner="))]
cfg = load_config("examples/minigpt4qwen_tiny.yaml", options + ["run.device=cpu"]).config
s = RunSettings.from_config(cfg)
task = get_registry().resolve("tasks", s.task).setup_task(cfg)
dataset = next(iter(task.build_datasets(cfg).values()))["train"]
batch = TrainStream(dataset, s.batch_size_train, s.seed, 0, 1).next()
model = task.build_model(cfg).train()
with FlopCounterMode(display=False) as counter:
    task.train_step(model=model, samples=batch)["loss"].backward()
per_sample = counter.get_total_flops() / s.batch_size_train
json.dump({"flops_per_sample": per_sample, "batch": s.batch_size_train}, open(sys.argv[1], "w"))
print(f"{per_sample / 1e9:.2f} GFLOP per training sample")
EOF
}
for name in $CONFIGS; do
  if [ "$name" = tiny ]; then count_flops tiny "${TINY[@]}"; fi
  if [ "$name" = mid ]; then count_flops mid "${MID[@]}"; fi
done

# -- summary ------------------------------------------------------------------------------------------
"$PY" - "$WORK" "$RESULTS" "$(($(date +%s) - START))" $CONFIGS <<'EOF'
import json, sys, time
from pathlib import Path
import torch
import os
work, results, wall = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
GPU = torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""
PEAKS = {"H200": 989, "H100 PCIe": 756, "H100": 989, "A100": 312, "L40S": 362, "L4": 121, "A10": 125}  # dense bf16
PEAK = float(os.environ.get("PEAK_TFLOPS") or next((v for k, v in PEAKS.items() if k in GPU), 0))
rows = []
for name in sys.argv[4:]:
    path = work / f"out_{name}" / "metrics.jsonl"
    if not path.is_file():
        rows.append({"config": name, "status": "failed"}); continue
    train = [e for e in map(json.loads, filter(None, path.read_text().splitlines())) if e["type"] == "train"]
    if not train:
        rows.append({"config": name, "status": "no train events (STEPS < log_freq 5?)"}); continue
    steady = train[1:] or train  # the first window includes start-up and CUDA warm-up
    rows.append({
        "config": name, "status": "ok", "steps": train[-1]["step"],
        "samples_per_sec": round(sum(e["samples_per_sec"] for e in steady) / len(steady), 1),
        "peak_memory_mb": round(max(e.get("max_memory_mb") or 0 for e in train)),
        "loss_first": round(train[0]["loss"], 4), "loss_last": round(train[-1]["loss"], 4),
    })
    flops = work / f"flops_{name}.json"
    if flops.is_file():
        per_sample = json.loads(flops.read_text())["flops_per_sample"]
        rows[-1]["gflop_per_sample"] = round(per_sample / 1e9, 2)
        if PEAK:
            rows[-1]["mfu_percent"] = round(100 * rows[-1]["samples_per_sec"] * per_sample / (PEAK * 1e12), 2)
info = {"gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (cpu)", "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M"),
        "zero_stage": 2, "precision": "bf16", "wall_s": wall, "peak_tflops_bf16": PEAK or "unknown (PEAK_TFLOPS)"}
(results / "gpu_check.json").write_text(json.dumps({"machine": info, "rows": rows}, indent=1))
header = list(dict.fromkeys(k for r in rows for k in r))
md = ["# DeepSpeed GPU check", "", ", ".join(f"{k}: {v}" for k, v in info.items()), "",
      "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
md += ["| " + " | ".join(str(r.get(k, "")) for k in header) + " |" for r in rows]
(results / "gpu_check.md").write_text("\n".join(md) + "\n")
print("\n".join(md))
EOF
log "done (results in $RESULTS)"
exit $status
