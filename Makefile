# make test: set up .venv and run the tests.  make demo: set up and run the main job.
# Override the torch pin with e.g. `make test TORCH=torch==2.14.1`.
PYTHON ?= python3
TORCH ?= torch==2.13.0
FACENET ?= facenet-pytorch==2.6.0
VENV := .venv
BIN := $(VENV)/bin
export NO_ALBUMENTATIONS_UPDATE := 1
export WANDB_MODE ?= offline

.PHONY: setup test demo clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	# MTCNN weights for score.py --align; only its weight files are used, and its own pins (torch<2.3, numpy<2) conflict with ours
	$(BIN)/python -m pip install --quiet --no-deps "$(FACENET)"
	touch $@

test: setup
	$(BIN)/python -m pytest -q

demo: setup
	$(BIN)/python score.py

clean:
	rm -rf $(VENV) outputs wandb lightning_logs .pytest_cache
