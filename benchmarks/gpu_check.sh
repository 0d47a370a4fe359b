#!/usr/bin/env bash
# GPU check of the DeepSpeed runner: MiniGPT4-Qwen compositions (BLIP-2 tower + Q-Former ->
# projection -> Qwen2) trained with ZeRO-2 bf16 on one NVIDIA GPU. Prints samples/s, peak GPU
# memory and the loss for each config, and writes them to $RESULTS/gpu_check.{json,md}.
#
#   bash benchmarks/gpu_check.sh            # from the repository root; about 3-6 minutes
#
# Configs (random init, offline: the data is rendered locally, nothing comes from the hub):
#   tiny  the `tiny` model type as in examples/minigpt4qwen_tiny.yaml (LLM trained)
#   mid   224 px images, a 12-layer ViT (384 wide), a 32-query Q-Former (256 wide), a Qwen2 LLM
#         of ~0.3B (1024 wide, 24 layers) trained fully: the
#         optimizer state is what ZeRO-2 partitions
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
CONFIGS="${CONFIGS:-tiny mid}"
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
export PYTHONPATH="$ROOT/core/src:$ROOT/plugins/blip2/src:$ROOT/plugins/qwen_llm/src:$ROOT/plugins/deepspeed/src${PYTHONPATH:+:$PYTHONPATH}"
export MM_PLUGIN_MODULES="mm_blip2.hooks,mm_qwen_llm.hooks,mm_deepspeed.hooks" MM_DISABLE_PLUGIN_AUTOLOAD=1
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
  "$PY" -m mm_core.engine.run --config examples/minigpt4qwen_tiny.yaml \
      --options "${COMMON[@]}" "run.output_dir=$WORK/out_$name" "$@" > "$WORK/$name.log" 2>&1 \
    || { tail -40 "$WORK/$name.log"; log "run $name FAILED"; return 1; }
}

status=0
for name in $CONFIGS; do
  if [ "$name" = tiny ]; then run_config tiny "${TINY[@]}" || status=1; fi
  if [ "$name" = mid ]; then run_config mid "${MID[@]}" || status=1; fi
done

# -- summary ------------------------------------------------------------------------------------------
"$PY" - "$WORK" "$RESULTS" "$(($(date +%s) - START))" $CONFIGS <<'EOF'
import json, sys, time
from pathlib import Path
import torch
work, results, wall = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
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
info = {"gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (cpu)", "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M"),
        "zero_stage": 2, "precision": "bf16", "wall_s": wall}
(results / "gpu_check.json").write_text(json.dumps({"machine": info, "rows": rows}, indent=1))
header = list(rows[0])
md = ["# DeepSpeed GPU check", "", ", ".join(f"{k}: {v}" for k, v in info.items()), "",
      "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
md += ["| " + " | ".join(str(r.get(k, "")) for k in header) + " |" for r in rows]
(results / "gpu_check.md").write_text("\n".join(md) + "\n")
print("\n".join(md))
EOF
log "done (results in $RESULTS)"
exit $status
