# Active Circuit Discovery: set-up, tests, the demo job and the toy model zoo.
#
#   make demo    set up .venv (first time only) and run the main job
#   make test    set up .venv, lint, and run every test (slow ones included)
#
# torch is installed first and on its own so that you can choose the build. The default is the CPU
# build; on a CUDA machine pass your own requirement, e.g.
#   make demo TORCH_SPEC="torch==2.13.0 --index-url <your CUDA wheel index>"
# A different TORCH_SPEC than the one installed re-runs the set-up.

PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
TORCH_SPEC ?= torch==$(TORCH_VERSION)

PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
ZOO_MODELS := toy-4l toy-4l-w144

# Re-install when pyproject.toml changes or when the stamp records another torch requirement.
ifneq ($(shell cat $(STAMP) 2>/dev/null),$(strip $(TORCH_SPEC)))
STAMP_DEPS := FORCE
endif

.PHONY: all venv test test-fast demo zoo-report lint typecheck format zoo clean distclean FORCE
all: test

venv: $(STAMP)

$(STAMP): pyproject.toml $(STAMP_DEPS)
	@echo "Setting up $(VENV) (first run only, or after pyproject.toml or TORCH_SPEC changed): about 2 minutes,"
	@echo "quiet unless something fails."
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "  [1/3] upgrading pip"
	@$(PIP) install --quiet --upgrade pip
	@echo "  [2/3] installing torch ($(strip $(TORCH_SPEC)))"
	@$(PIP) install --quiet $(TORCH_SPEC)
	@echo "  [3/3] installing this package and its dependencies (circuit-tracer, gymnasium, ray, ...)"
	@$(PIP) install --quiet -e '.[dev,ray]'
	@echo '$(strip $(TORCH_SPEC))' > $(STAMP)
	@echo "$(VENV) is ready: run the commands as $(VENV)/bin/acd ..., or 'source $(VENV)/bin/activate' first."

test: venv
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pyright
	$(VENV)/bin/pytest -q

test-fast: venv
	$(VENV)/bin/pytest -q -m 'not slow'

# The main job: the default benchmark on the embedded model (leaderboard printed; outputs in runs/<time>/).
demo: venv
	@echo "Running the default benchmark: $(VENV)/bin/acd bench (a minute or two on 2 CPU cores; a progress bar follows)"
	$(VENV)/bin/acd bench

# The zoo's discrimination tables (the quality bars of docs/design.md, Models), one per shipped model.
zoo-report: venv
	for m in $(ZOO_MODELS); do $(PY) scripts/zoo_report.py --model $$m --n 20 --quiet || exit 1; done

lint: venv
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pyright

# pyright (basic mode; [tool.pyright] in pyproject.toml) over acd_env, agents and benchmarks; `make test` and
# `make lint` run it too (it is clean: keep it so).
typecheck: venv
	$(VENV)/bin/pyright

format: venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# Retrain the shipped toy models into acd_env/models/zoo (one thread: bit-reproducible; ~20 min each), then
# rebuild their circuit tables and check the quality bars.
zoo: venv
	for m in $(ZOO_MODELS); do \
	  $(PY) scripts/train_zoo.py --name $$m && \
	  $(PY) scripts/build_tables.py --model $$m --force && \
	  $(PY) scripts/zoo_report.py --model $$m --n 20 --check --quiet || exit 1; \
	done

clean:
	rm -rf .pytest_cache .ruff_cache build dist *.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
