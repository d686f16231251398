# astlab — every target creates .venv on first use, so a fresh clone needs nothing preinstalled.
SHELL := /bin/bash
VENV  ?= .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export HF_HUB_OFFLINE ?= 1
export MPLBACKEND ?= Agg

.PHONY: install demo test test-slow sync-check nbtest pytest browser readme bench gpu-check clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

## The main job on the embedded default data, on CPU; ends with the equal-compute verdict (astlab-compare)
demo: install
	$(VENV)/bin/astlab-sweep configs/digits_ast.yaml configs/digits_full.yaml configs/digits_random.yaml \
	    --output-log results/digits/sweep_log.jsonl --no-progress
	$(VENV)/bin/astlab-analyze --results-dir results/digits --plot
	$(VENV)/bin/astlab-compare --config configs/digits_compare.yaml --budgets 0.5 --methods ast is null --seeds 2 \
	    --set training.epochs=5 --out results/demo_compare

## Everything CI checks
test: install sync-check nbtest pytest

## Fails when nbdev-export / nbdev-clean would change a tracked file (library and notebooks out of sync)
sync-check: install
	@before="$$(git status --porcelain -- astlab nbs; git diff -- astlab nbs | sha1sum)"; \
	$(VENV)/bin/nbdev-export && $(VENV)/bin/nbdev-clean; \
	after="$$(git status --porcelain -- astlab nbs; git diff -- astlab nbs | sha1sum)"; \
	if [ "$$before" != "$$after" ]; then \
	  echo "nbdev-export/nbdev-clean changed files: notebooks and astlab/ were out of sync:"; git status --short -- astlab nbs; exit 1; \
	fi; echo "sync-check: notebooks, library and cleaning in sync"

nbtest: install
	$(VENV)/bin/nbdev-test --n-workers 2

pytest: install browser
	$(PY) -m pytest -q -m "not slow" --durations=15

## The long tests `make test` leaves out (marked `slow`: benchmark smoke runs, multi-process and real-signal runs)
## and the notebooks' slow cells; about as long again as `make test`
test-slow: install browser
	$(PY) -m pytest -q -m slow
	for nb in $$(grep -rl --include='*.ipynb' '"#| slow' nbs); do $(VENV)/bin/nbdev-test --flags slow $$nb || exit 1; done

## Debian's chromium for the HTML report's browser test (installed when missing; says why when it cannot be)
browser:
	@bash tools/install_chromium.sh

## Re-render README.md from nbs/index.ipynb (a test checks they agree)
readme: install
	$(PY) tools/render_readme.py

## CPU benchmarks, quick versions (< 10 min on 2 idle cores): step time (6 timed rounds), digits quality (1 seed),
## whole runs at r = 0.25 (1 seed, 5 variants)
bench: install
	$(PY) benchmarks/step_time.py --quick
	$(PY) benchmarks/digits_quality.py --quick
	$(PY) benchmarks/whole_run.py --quick

## Everything that needs a CUDA GPU, in one command (<= 8 min on one modern GPU): the CUDA-only tests,
## benchmarks/gpu_resnet50.py (full vs AST, with and without full backward batches) and a 2-epoch bf16 + channels_last +
## compile astlab-run; one JSON under benchmarks/results/. Without CUDA: one line, exit 2, before any work (no install).
gpu-check:
	@$(if $(wildcard $(PY)),$(PY),python3) benchmarks/gpu_check.py --cuda-or-exit
	@$(MAKE) --no-print-directory install
	$(PY) benchmarks/gpu_check.py

clean:
	rm -rf results _proc _docs build dist *.egg-info
