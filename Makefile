# Two entry points, both self-contained on a fresh machine (each sets up .venv first):
#   make demo   - the main job: the bundled model labels and searches the bundled sample images, offline
#   make test   - the whole test suite against the reference implementations
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch/torchvision pinned to the wheels this workplace caches; the references need torchvision, clipforge does not.
TORCH_PIN := torch==2.14.1
TORCHVISION_PIN := torchvision==0.29.1

.PHONY: demo test venv clean

# clipforge alone (what the main job needs) ...
$(VENV)/.core: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q $(TORCH_PIN)
	$(VENV)/bin/pip install -q -e .
	touch $@

# ... and the reference implementations the tests compare against.
$(VENV)/.test: $(VENV)/.core
	$(VENV)/bin/pip install -q $(TORCH_PIN) $(TORCHVISION_PIN)
	$(VENV)/bin/pip install -q -e ".[test]"
	touch $@

venv: $(VENV)/.test

demo: $(VENV)/.core
	$(PY) -m clipforge.cli.main demo

test: $(VENV)/.test
	OMP_NUM_THREADS=2 $(PY) -m pytest -q -p no:cacheprovider tests

clean:
	rm -rf $(VENV) build dist src/*.egg-info
