# Self-contained on a fresh machine:
#   make test   - the whole test suite against the reference implementations (sets up .venv first)
# (The main-job command, `make demo` on the bundled default model, arrives with the training work.)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch/torchvision pinned to the wheels this workplace caches; the references need torchvision, clipforge does not.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: test venv clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q $(TORCH_PINS)
	$(VENV)/bin/pip install -q -e ".[test]"
	touch $@

venv: $(VENV)/.installed

test: $(VENV)/.installed
	OMP_NUM_THREADS=2 $(PY) -m pytest -q -p no:cacheprovider tests

clean:
	rm -rf $(VENV) build dist src/*.egg-info
