# The two commands the README promises on a fresh machine: `make demo` and `make test`.
VENV    ?= .venv
PYTHON  ?= $(shell command -v python3.11 || command -v python3)
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
EXTRAS  ?= train,datasets,postgres,serve,optimize,openvino,dev
OUT     ?= quickstart-out

.PHONY: install demo test lint typecheck unit bench clean

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

unit: $(STAMP)
	$(VENV)/bin/pytest -n 2 -m "not bench" tests

test: lint typecheck unit

# The long benchmarks behind docs/benchmarks.md (minutes each; not part of `make test`).
bench: $(STAMP)
	$(PY) bench/repeatability.py
	$(PY) -m pip install --quiet -e '.[nncf,bench-models]'
	$(PY) bench/optimize_int8.py --cpu 1 --threads 1
	$(PY) bench/optimize_torch.py
	$(PY) bench/serve_bench.py

clean:
	rm -rf $(VENV) $(OUT) .mypy_cache .ruff_cache .pytest_cache
