# sdlab: `make run` generates an image with the embedded default model; `make test` runs every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
VECTORS ?= ../shared/conformance
PROMPT ?= a red circle on a blue background
OUT ?= outputs

.PHONY: venv run test conformance lint eval bench bench-quick clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -r requirements.lock
	# spandrel declares torchvision, whose PyPI wheel is a CUDA build that breaks CPU torch: install it
	# without dependencies; sdlab.post.spandrel_compat supplies the few names it imports (see README).
	$(BIN)/python -m pip install -q --no-deps spandrel==0.4.2
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $@

run: venv
	$(BIN)/sdlab txt2img "$(PROMPT)" --sampler "Euler a" --steps 20 --seed 1 --out $(OUT)

lint: venv
	$(BIN)/lint-imports

conformance: venv
	$(BIN)/python -m sdlab.conformance $(VECTORS)

test: venv
	$(BIN)/lint-imports
	$(BIN)/python -m sdlab.conformance $(VECTORS)
	$(BIN)/python -m pytest -q

eval: venv
	$(BIN)/python benchmarks/eval_default_model.py

# benchmarks/suite.py: sdlab vs plain diffusers on random full-size weights (checkpoints cached in
# $(BENCH_CACHE), outside the repo). bench-quick: SD1.5 only, 2 steps, one round (~10 min on 2 cores).
BENCH_CACHE ?= $(HOME)/.cache/sdlab-bench
BENCH_ARGS ?=

bench: venv
	$(BIN)/python benchmarks/suite.py --cache-dir $(BENCH_CACHE) $(BENCH_ARGS)

bench-quick: venv
	$(BIN)/python benchmarks/suite.py --quick --cache-dir $(BENCH_CACHE) $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
