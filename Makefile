# Two commands on a fresh machine:  make demo  |  make test
# Each creates .venv if it is missing and installs what it needs first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test install lint bench-smoke clean browser

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch/torchvision first, pinned to the releases these machines install from local disk
	# (any other release pulls multi-GB downloads); pyproject.toml caps them at these versions.
	$(PY) -m pip install --quiet 'torch==2.14.1' 'torchvision==0.29.1'
	$(PY) -m pip install --quiet -e '.[all]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/creative-qa demo

# The browser test of GET / drives the system's headless Chromium (never a downloaded one):
# install Debian's package when it is missing.
browser:
	@test -x /usr/bin/chromium || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && $$SUDO apt-get install -y -q --no-install-recommends chromium; }

test: $(STAMP) browser
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

bench-smoke: $(STAMP)
	$(PY) benchmarks/onnx_throughput.py --quick

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
