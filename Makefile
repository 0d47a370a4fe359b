# Every target bootstraps what it needs: a fresh clone runs `make test` or `make demo` directly.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mm-installed
# On this project's machines these pins install from local disk (pip only; uv/poetry ignore it).
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
# mm-core and the plugins of this repository (mm-plugin-deepspeed comes after DeepSpeed's own build, below)
PACKAGES := -e core -e plugins/blip_processors -e plugins/blip -e plugins/blip2 -e plugins/qwen_llm \
	-e plugins/datasets_coco -e plugins/avsd_dialogue -e plugins/caption_metrics -e plugins/serve -e plugins/report \
	-e plugins/tensorboard -e plugins/memory_plan

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export OMP_NUM_THREADS := 1
export MKL_NUM_THREADS := 1
export TOKENIZERS_PARALLELISM := false
export DS_ACCELERATOR := cpu
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install browser demo test test-fast mutants bench lint clean

install: $(STAMP)

$(STAMP): core/pyproject.toml plugins/*/pyproject.toml requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q $(TORCH_PINS) $(PACKAGES) -r requirements-dev.txt
	# DeepSpeed is an sdist that imports torch to build: build it against the venv's torch, no C++ ops
	DS_BUILD_OPS=0 $(PY) -m pip install -q --no-build-isolation $(TORCH_PINS) 'deepspeed>=0.15' -e plugins/deepspeed
	touch $(STAMP)

# A fresh run each time (metrics.jsonl appends; an old run's events would mix into the report).
demo: $(STAMP)
	rm -rf output/quickstart
	$(VENV)/bin/mmrun --config examples/quickstart.yaml
	$(VENV)/bin/mmrun report output/quickstart
	$(PY) examples/check_quickstart.py output/quickstart

# Debian's chromium for the web-page test (never `playwright install`: it downloads browsers).
browser:
	@command -v chromium >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
		echo "warning: chromium could not be installed; the browser test will be skipped"

test: $(STAMP) browser
	$(PY) -m pytest

# The edit loop: everything but the tests marked slow (real runs, servers, browsers, multi-process).
test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

# Does each listed wrong change fail a test? (mutation/mutants.yaml, docs/testing.md; ~4 min, not in `make test`)
mutants: $(STAMP)
	$(PY) mutation/run.py

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

lint: $(STAMP)
	$(VENV)/bin/ruff check core plugins tests benchmarks mutation examples

clean:
	rm -rf $(VENV) output
