# sarco_nn — two commands for a fresh machine:
#   make demo   installs, makes phantom data, converts, plans, trains, predicts and evaluates on held-out
#               phantoms of the training family (A, internal) and of an independent family (B, external); CPU, < 15 min
#               DEMO_TISSUES=1 (default) trains the muscle-only model; DEMO_TISSUES=4 a four-tissue model (muscle, IMAT, VAT, SAT)
#   make test   installs and runs the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SARCO := $(BIN)/sarco
DEMO ?= demo
DEMO_WS := $(DEMO)/workspace
DEMO_TRAIN_CASES ?= 40
DEMO_TEST_CASES ?= 12
DEMO_EXTERNAL_CASES ?= 12
DEMO_TRAINER ?= smit
DEMO_PRESET ?= cpu
# 4: convert with --keep-tissues (muscle, IMAT, VAT, SAT: one 4-class head, same network and budget); 1: muscle only
DEMO_TISSUES ?= 1
DEMO_KEEP_TISSUES = $(if $(filter 4,$(DEMO_TISSUES)),--keep-tissues,)
PYTEST_ARGS ?=
# test processes (pytest-xdist): the suite is single-threaded per test (children run with OMP_NUM_THREADS=1),
# so one worker per core halves its wall time; whole files go to one worker (their module fixtures are built once),
# in collection order (--no-loadscope-reorder), which starts the slowest files first (tests/conftest.py HEAVY_TEST_FILES)
TEST_WORKERS ?= 2
TEST_PARALLEL = $(if $(filter 0 1,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder)

.PHONY: install test test-fast demo clean-demo bench

$(BIN)/sarco: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(BIN)/sarco

install: $(BIN)/sarco

test: install
	$(BIN)/python -m pytest -q $(TEST_PARALLEL) $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow" $(TEST_PARALLEL) $(PYTEST_ARGS)

# The demo only ever writes below $(DEMO)/, which it owns and recreates.
demo: install
	@case "$(DEMO_TISSUES)" in 1|4) ;; *) echo "make demo: DEMO_TISSUES must be 1 (muscle only) or 4 (muscle, IMAT, VAT, SAT), not '$(DEMO_TISSUES)'" >&2; exit 2;; esac
	rm -rf $(DEMO)
	$(SARCO) demo-data $(DEMO)/drop --cases $(DEMO_TRAIN_CASES) --seed 1
	$(SARCO) demo-data $(DEMO)/heldout --cases $(DEMO_TEST_CASES) --seed 2 --case-prefix heldout
	$(SARCO) demo-data $(DEMO)/external --cases $(DEMO_EXTERNAL_CASES) --seed 3 --family B --case-prefix siteb
	$(SARCO) convert $(DEMO)/drop --name Demo $(DEMO_KEEP_TISSUES) --workspace $(DEMO_WS)
	$(SARCO) plan --preset $(DEMO_PRESET) --workspace $(DEMO_WS)
	$(SARCO) train all --trainer $(DEMO_TRAINER) --workspace $(DEMO_WS)
	$(SARCO) predict -i $(DEMO)/heldout/images -o $(DEMO)/predictions --clinical $(DEMO)/heldout/clinical.csv --workspace $(DEMO_WS)
	$(SARCO) evaluate $(DEMO)/predictions --reference $(DEMO)/heldout/masks --clinical $(DEMO)/heldout/clinical.csv --images $(DEMO)/heldout/images -o $(DEMO)/report
	$(SARCO) predict -i $(DEMO)/external/images -o $(DEMO)/predictions_external --clinical $(DEMO)/external/clinical.csv --workspace $(DEMO_WS)
	$(SARCO) evaluate $(DEMO)/predictions_external --reference $(DEMO)/external/masks --clinical $(DEMO)/external/clinical.csv --images $(DEMO)/external/images -o $(DEMO)/report_external
	$(BIN)/python bench/external_validation.py --compare "internal (family A)=$(DEMO)/report" "external (family B)=$(DEMO)/report_external" | tee $(DEMO)/internal_vs_external.md

clean-demo:
	rm -rf $(DEMO)
