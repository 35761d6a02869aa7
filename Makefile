# Two entry points, both self-contained on a fresh machine:
#   make demo   - the main job: load a model and run it (sets up .venv first)
#   make test   - the whole test suite against the reference implementations (sets up .venv first)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch/torchvision pinned to the wheels this workplace caches; the references need torchvision, clipforge does not.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: test demo venv clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade "pip>=23" 2>/dev/null || true
	$(VENV)/bin/pip install -q $(TORCH_PINS)
	$(VENV)/bin/pip install -q -e ".[test]"
	touch $@

venv: $(VENV)/.installed

test: $(VENV)/.installed
	OMP_NUM_THREADS=2 $(PY) -m pytest -q -p no:cacheprovider tests

demo: $(VENV)/.installed
	$(PY) -m clipforge.cli.main demo

clean:
	rm -rf $(VENV) build dist src/*.egg-info
