# Two commands on a fresh machine:  make demo  |  make test
# Each creates .venv if it is missing and installs what it needs first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test install lint bench-smoke clean browser label-studio

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

# Label Studio, for the round trip of tests/labelstudio: its own environment, so its pins never meet ours.
# sentry-sdk < 3: Label Studio 1.23.2 passes an option that sentry-sdk 3 removed, and would not start.
LS_VENV := .venv-ls
$(LS_VENV)/.installed:
	@test -x $(LS_VENV)/bin/python || $(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LS_VENV)/bin/python -m pip install --quiet 'label-studio==1.23.2' 'sentry-sdk<3'
	@touch $@

label-studio: $(LS_VENV)/.installed

test: $(STAMP) browser bench-data label-studio
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

bench-smoke: $(STAMP)
	$(PY) benchmarks/onnx_throughput.py --quick

clean:
	rm -rf $(VENV) $(LS_VENV) .pytest_cache .ruff_cache *.egg-info

# The real-photo benchmark (benchmarks/realphoto.py, benchmarks/rules.py): photographs and fonts from Debian
# packages (installed only when missing; sources and licences in benchmarks/realphoto_sources.md), then
# OpenCV, scikit-image and PyWavelets come with the `bench` extra (in `all`, so in the venv).
BENCH_DEBS := lomiri-wallpapers-16.04 lomiri-wallpapers-20.04 mate-backgrounds plasma-workspace-wallpapers \
  palapeli-data fonts-liberation2 fonts-lato fonts-roboto-unhinted fonts-open-sans fonts-bebas-neue \
  fonts-league-spartan fonts-comfortaa
.PHONY: bench-data
bench-data: $(STAMP)
	@missing=$$(for p in $(BENCH_DEBS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && $$SUDO apt-get install -y -q --no-install-recommends $$missing; fi
