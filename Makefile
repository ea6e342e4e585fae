# The two commands the README promises on a fresh machine: `make demo` and `make test`.
VENV    ?= .venv
PYTHON  ?= $(shell command -v python3.11 || command -v python3)
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
EXTRAS  ?= train,datasets,postgres,serve,control,mqtt,optimize,openvino,tflite,tflm,coreml,fl,dev
OUT     ?= quickstart-out

.PHONY: install demo test lint typecheck unit bench clean tflite-env convert-check

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[$(EXTRAS)]'
	@# torch is pinned to the local CPU build; fail loudly if anything pulled another one.
	$(PY) -c "import torch, sys; v = torch.__version__; print('torch', v); sys.exit(0 if v.startswith('2.13.0') else 'wrong torch: ' + v)"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/edgeloop quickstart --out $(OUT)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

typecheck: $(STAMP)
	$(VENV)/bin/mypy --strict src

# The TFLite converter's own environment is built first so the conversion tests run, not skip.
# --dist loadscope keeps each module on one worker: a module-scoped fleet, Chromium or converted
# model is then built once, not once per worker. xdist then orders modules by their number of
# tests (the one-test quickstart module runs last); keeping the collection order instead
# (--no-loadscope-reorder) measured slower: 1,149 s against 1,064 s of pytest on a clean clone.
unit: $(STAMP) tflite-env
	$(VENV)/bin/pytest -n 2 --dist loadscope -m "not bench" tests

# Both environments are built at once (two independent pip runs), then ruff and mypy run beside
# the first tests: about 4 minutes less than one step after another on 2 cores.
test:
	$(MAKE) --jobs=2 $(STAMP) tflite-env
	$(MAKE) --jobs=3 lint typecheck unit

# The long benchmarks behind docs/benchmarks.md (minutes each; not part of `make test`).
# The .tflite producer (litert-torch) in its own environment: it would downgrade typing-extensions
# and pydantic in .venv. edgeloop finds it at .venv-tflite (or $$EDGELOOP_TFLITE_PYTHON).
tflite-env: .venv-tflite/.installed

.venv-tflite/.installed:
	$(PYTHON) -m venv .venv-tflite
	.venv-tflite/bin/pip install --quiet 'torch==2.13.0' 'litert-torch==0.10.*' 'ai-edge-litert>=2.3' 'onnx>=1.16'
	@# ONNX files made elsewhere reach TFLite / Core ML through onnx2torch. --no-deps: it declares
	@# torchvision, whose newest release pulls a newer, CUDA-built torch; it runs without it.
	.venv-tflite/bin/pip install --quiet --no-deps 'onnx2torch==1.5.15'
	.venv-tflite/bin/python -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('2.13.0') else 'wrong torch')"
	touch $@

# Every conversion target on a tiny model and the digits CNN (the tests skip TFLite without it).
convert-check: $(STAMP) tflite-env
	$(VENV)/bin/pytest -p no:xdist tests/formats/test_convert_targets.py tests/formats/test_convert_tflite.py tests/formats/test_convert_foreign.py
	$(PY) bench/convert_digits.py --out convert-out

bench: $(STAMP)
	$(PY) bench/repeatability.py
	$(PY) -m pip install --quiet -e '.[nncf,bench-models]'
	$(PY) bench/optimize_int8.py --cpu 1 --threads 1
	$(PY) bench/optimize_torch.py
	$(PY) bench/serve_bench.py
	$(PY) -m pip install --quiet -e '.[bench-fleet]'
	$(PY) bench/fleet_scale.py --client aiohttp --backend sqlite --agents 1000 2000 5000 --profile
	$(PY) -m pip install --quiet -e '.[bench-drift]'
	$(PY) bench/drift_bench.py
	$(PY) bench/fl_bench.py
	$(PY) bench/ab_bench.py --runs 20000 --seed 15 --markdown

clean:
	rm -rf $(VENV) $(OUT) .mypy_cache .ruff_cache .pytest_cache
