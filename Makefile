# Two commands do everything on a fresh clone: `make demo` and `make test`. Both create .venv on first use
# (and again only when requirements.txt changes), so re-running them is fast and safe.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: setup demo test benchmark clean

setup: $(INSTALLED)

# pymarlin 0.3.6 declares torch<=1.9.1, which has no build for today's Python: it is installed without its
# declared dependencies, after ours (glue_support/pymarlin_compat.py makes it work with them).
$(INSTALLED): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps pymarlin==0.3.6
	touch $@

# The main job: fine-tune the embedded MiniLM on GLUE RTE (shipped in RTE/) and print its dev accuracy.
demo: $(INSTALLED)
	@start=$$SECONDS; \
	$(PY) data.py --dmod.input_dir RTE --dmod.output_dir processed_data/RTE/train --dproc.task RTE --dproc.set_type train && \
	$(PY) data.py --dmod.input_dir RTE --dmod.output_dir processed_data/RTE/dev --dproc.task RTE --dproc.set_type dev && \
	$(PY) train.py --tmod.trainpath processed_data/RTE/train --tmod.valpath processed_data/RTE/dev \
		--tmod.output_dir training_output/RTE --tmod.overwrite_output_dir true && \
	echo "Demo finished in $$((SECONDS - start)) s; model and results.json in training_output/RTE"

# The five-task scoreboard of the README ("Benchmark your model"): downloads what GLUE_DIR lacks (verified), then
# fine-tunes and scores; rerunning resumes. E.g. make benchmark GLUE_DIR=../shared/glue_data MODEL=<hub id or path>
GLUE_DIR ?= glue_data
MODEL ?= sentence-transformers/all-MiniLM-L6-v2
BENCHMARK_TASKS ?= RTE,MRPC,STS-B,CoLA,SST-2
benchmark: $(INSTALLED)
	$(PY) download_glue.py --tasks $(BENCHMARK_TASKS) --data_dir $(GLUE_DIR)
	$(PY) benchmark.py --tasks $(BENCHMARK_TASKS) --data_dir $(GLUE_DIR) --model $(MODEL) --seeds 3

# The Azure ML SDK, for aml_submit.py and its tests only: `make demo` does not need it.
AML_INSTALLED := $(VENV)/.installed-aml
$(AML_INSTALLED): requirements-aml.txt $(INSTALLED)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-aml.txt
	touch $@

test: $(INSTALLED) $(AML_INSTALLED)
	$(PY) -m ruff check .
	$(PY) -m pytest -q tests

clean:
	rm -rf processed_data training_output benchmark_output
