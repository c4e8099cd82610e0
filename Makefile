# muomni: `make demo` runs the whole chain on the demo corpus, `make test` runs the tests.
# Both create .venv and install what they need first.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# A torch already installed in the environment satisfies the package's torch>=2.10 range;
# set TORCH_SPEC (e.g. TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cpu") to choose the build.
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= dev,eval,export,universal
STAMP := $(VENV)/.installed-$(EXTRAS)
SYSTEM_PACKAGES := flite espeak-ng chromium
RUFF_PATHS := muomni tests bench *.py

.PHONY: demo test lint bench gpu-check install system-deps clean-demo

demo: install system-deps
	$(PY) -m muomni.demo

test: install system-deps lint
	$(PY) -m pytest -q

lint: install
	$(PY) -m ruff check $(RUFF_PATHS)

bench: install system-deps
	$(PY) bench/run_all.py

# On a lent GPU (under 5 minutes): bf16 steps per config, fp16 overflow, compiled decoding, peak memory
# vs 12 GB -> bench/gpu_results.md and .json. Without CUDA it runs its CPU smoke sizes.
gpu-check: install
	$(PY) bench/gpu_check.py

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

# The demo corpus is synthesized with flite; phoneme input uses espeak-ng; the listening page's test renders
# it in headless chromium (Debian packages, each named like its command).
system-deps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do command -v $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		SUDO=""; [ "$$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"; \
		( $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq $$missing ) >/dev/null 2>&1 || { \
			echo "error: could not install the Debian package(s)$$missing."; \
			echo "       muomni needs 'flite' (the demo corpus synthesizer), 'espeak-ng' (phoneme input) and"; \
			echo "       'chromium' (renders the listening page in its test)."; \
			echo "       Install them with: sudo apt-get install$$missing"; exit 1; }; \
	fi

# Every demo run lives under checkpoints/demo; older demos left their vocoder in checkpoints/vocoder,
# removed too when its config says it trained on the demo corpus.
clean-demo:
	rm -rf data/demo checkpoints/demo outputs/demo
	@if grep -qs '"path": "data/demo"' checkpoints/vocoder/config.json; then \
		echo "removing checkpoints/vocoder (a vocoder an older demo trained)"; rm -rf checkpoints/vocoder; fi
