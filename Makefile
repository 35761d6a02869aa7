# Two entry points, both self-contained on a fresh machine (each sets up .venv first):
#   make demo       - the main job: the bundled model labels and searches the bundled sample images, offline
#   make test       - the whole test suite against the reference implementations, plus the import contracts
#   make test-fast  - everything but the tests marked slow (full-size models, training runs, torchrun,
#                     data-set builds): the tier for your own iterations
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch/torchvision pinned to the wheels this workplace caches; the references need torchvision, clipforge does not.
TORCH_PIN := torch==2.14.1
TORCHVISION_PIN := torchvision==0.29.1
# Debian packages the tests read or drive: WordNet and a word list (the interrogation tables are rebuilt
# from them), chromium (the web app is tested in a real browser).
SYSTEM_PACKAGES := wordnet-base wamerican-small chromium
PYTEST := OMP_NUM_THREADS=2 $(PY) -m pytest -q -p no:cacheprovider

.PHONY: demo test test-fast lint-imports venv system-packages clean

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

# A test that CI skips does not run: install what the tests need instead of skipping them.
system-packages:
	@missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages the tests need:" $$missing; \
	  sudo=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$sudo apt-get install -y -q $$missing >/dev/null || { $$sudo apt-get update -q >/dev/null && $$sudo apt-get install -y -q $$missing >/dev/null; }; \
	fi

venv: $(VENV)/.test

demo: $(VENV)/.core
	$(PY) -m clipforge.cli.main demo

lint-imports: $(VENV)/.test
	$(VENV)/bin/lint-imports

test: $(VENV)/.test system-packages lint-imports
	$(PYTEST) tests

test-fast: $(VENV)/.test system-packages
	$(PYTEST) -m "not slow" tests

clean:
	rm -rf $(VENV) build dist src/*.egg-info
