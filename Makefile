# The two commands of the README: `make run` and `make test`.
# Each creates .venv and installs the project when missing (stamp file tracks pyproject.toml).
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

# constraints.txt pins the whole resolved set, so a new release of any dependency cannot break
# a fresh install; `make lock` re-resolves it from pyproject.toml's ranges in a scratch venv.
CONSTRAINTS := constraints.txt

.PHONY: run test test-slow test-all bench docs install lock clean

$(STAMP): pyproject.toml Makefile $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) -e ".[test,sim]"
	# pyserini without its dependency set (torch, faiss, transformers...): BM25 needs only
	# the Anserini jar and pyjnius. rare_core/retrieval/jvm.py explains the import path.
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) --no-deps "pyserini==1.6.0"
	touch $(STAMP)

lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade pip
	.lock-venv/bin/python -m pip install --quiet ".[test,sim,bench,docs]"
	.lock-venv/bin/python -m pip install --quiet --no-deps "pyserini==1.6.0"
	(echo "# The resolved dependency set that 'make' installs (pip -c). Regenerate with 'make lock'."; \
	 .lock-venv/bin/python -m pip freeze --exclude-editable | grep -v '^rare-pipeline') > $(CONSTRAINTS)
	rm -rf .lock-venv build *.egg-info

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/rare run --input data/pubmedqa_sample.jsonl --output out/

# `make test`: everything but the long end-to-end tests (marked slow: NFCorpus, a Prefect server
# killed mid-run, deployments on a worker, PostgreSQL); `make test-all` runs them too, and CI
# runs `make test` then `make test-slow`.
test: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

test-all: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) -e ".[test,sim,bench]"
	$(PY) bench/llm_throughput.py
	$(PY) bench/llm_teachers.py
	$(PY) bench/verification.py
	$(PY) bench/hardneg_mining.py

# The documentation site (mkdocs.yml, docs/): --strict fails on a broken link or anchor, a page
# left out of the nav, or a configuration example PipelineConfig refuses. NO_MKDOCS_2_WARNING:
# Material prints its end-of-life notice on every build otherwise (mkdocs is pinned below 2).
docs: $(STAMP)
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) -e ".[test,docs]"
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

clean:
	rm -rf $(VENV) cache out
