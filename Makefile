# The two commands of the README: `make run` and `make test`.
# Each creates .venv and installs the project when missing (stamp file tracks pyproject.toml).
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test bench install clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	# pyserini without its dependency set (torch, faiss, transformers...): BM25 needs only
	# the Anserini jar and pyjnius. rare_core/retrieval/jvm.py explains the import path.
	$(PY) -m pip install --quiet --no-deps "pyserini==1.6.0"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/rare run --input data/pubmedqa_sample.jsonl --output out/

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m pip install --quiet -e ".[test,bench]"
	$(PY) bench/llm_throughput.py
	$(PY) bench/hardneg_mining.py

clean:
	rm -rf $(VENV) cache out
