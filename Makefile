# Two set-up commands: `make demo` and `make test`. Both build .venv from scratch.
PYTHON ?= python3
VENV ?= .venv
# A CPU build of torch is installed first so a fresh install never pulls CUDA wheels.
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=
DEMO_PRESETS ?= texture-drums grain-noisy texture-grain
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: test demo install lint bench clean docs

$(VENV)/.base:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH_SPEC)"
	touch $@

$(VENV)/.dev: $(VENV)/.base pyproject.toml
	$(PIP) install -q -e ".[dev,viz]"
	touch $@

$(VENV)/.app: $(VENV)/.base pyproject.toml
	$(PIP) install -q -e .
	touch $@

install: $(VENV)/.app

test: $(VENV)/.dev
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .

demo: $(VENV)/.app
	rm -rf demo-in
	$(PY) tools/demo.py demo-in
	for p in $(DEMO_PRESETS); do $(VENV)/bin/cakfx process demo-in -p $$p -o demo-out/$$p --overwrite || exit 1; done
	@echo
	@echo "Demo input:   $(CURDIR)/demo-in"
	@echo "Demo output:  $(CURDIR)/demo-out/<preset>/  (presets: $(DEMO_PRESETS))"

docs: $(VENV)/.dev
	$(PY) tools/docs.py README.md

bench: $(VENV)/.dev
	for b in bench/*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) build dist *.egg-info demo-in demo-out

# Retrain the bundled default weights (weights/README.md): fast profile on the CPU, seeded. Grain
# learns from music and loops (sonic-pi-samples, CC0; wesnoth-1.16-music, GPL-2+, cut into 15 s
# clips); texture from hydrogen-drumkits, which measured stronger than music for it. Held out
# for bench/quality.py: the VariBreaks kit (its other packages are in neither corpus).
WEIGHTS_CORPUS ?= build/weights-corpus
HYDROGEN_KITS ?= /usr/share/hydrogen/data/drumkits
WEIGHTS_HOME ?= build/weights-home
CORPUS_PACKAGES = sonic-pi-samples wesnoth-1.16-music hydrogen-drumkits
SUDO ?= $(shell [ "$$(id -u)" = 0 ] || echo sudo)
WEIGHTS_ARGS = --profile fast --seed 42 --device cpu --threads 1 --out weights/

.PHONY: weights weights-corpus weights-texture weights-grain
weights: weights-texture weights-grain

weights-corpus: $(VENV)/.app
	@dpkg -s $(CORPUS_PACKAGES) >/dev/null 2>&1 || { $(SUDO) apt-get update && $(SUDO) apt-get install -y $(CORPUS_PACKAGES); }
	$(PY) -m cakfx.trainers.corpus $(WEIGHTS_CORPUS)

weights-texture: weights-corpus
	CAKFX_HOME=$(WEIGHTS_HOME) $(VENV)/bin/cakfx train texture "$(HYDROGEN_KITS)" -n cak-texture-default \
		--epochs 30 --exclude 'VariBreaks/*' $(WEIGHTS_ARGS)

weights-grain: weights-corpus
	CAKFX_HOME=$(WEIGHTS_HOME) $(VENV)/bin/cakfx train grain "$(WEIGHTS_CORPUS)" -n cak-grain-default \
		--epochs 20 $(WEIGHTS_ARGS)
