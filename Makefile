# Two commands on a fresh machine with Python >= 3.11 and pip:
#   make demo   set up .venv, run all notebooks on the bundled data into runs/demo/
#               (synthetic fields, then the real phase-contrast field into runs/demo/real/),
#               with the notebooks' classroom defaults; `make full` for the full experiments
#   make test   set up .venv with test extras, run the fast test suite (every module and
#               notebook wiring; a few minutes)
#   make test-slow  the end-to-end accuracy checks (training, notebooks, real data, cluster)
#   make test-browser  the notebooks in JupyterLab in headless Chromium (apt: chromium
#               chromium-driver), widgets moved, screenshots -> runs/browser/; the course site
#   make book   the course site from the executed demo notebooks -> runs/book/index.html
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
RUN    ?= runs/demo

.PHONY: demo full table1 test test-slow test-browser book setup bench clean-runs

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[test]'
	touch $@

# what only the slow and browser targets need (JAX, the second backend CI tests; selenium),
# installed by those targets, so that `make test` on a fresh clone installs less
$(VENV)/.installed-slow: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[test,jax]'
	touch $@

$(VENV)/.installed-browser: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[test,browser]'
	touch $@

setup: $(VENV)/.installed

demo: $(VENV)/.installed
	$(PY) -m cellnb run-notebooks --params notebooks/demo.yaml --out $(RUN)
	$(PY) -m cellnb run-notebooks --params notebooks/demo_real.yaml --out $(RUN)/real \
	    --only 01 03 04 05 06

# The full experiments of the series (Table I in notebooks 04-06, both nucleus models trained in
# 02; Table I's 12 trainings alone 23 min on 2 CPU cores) -> runs/full/
full: $(VENV)/.installed
	$(PY) -m cellnb run-notebooks --params notebooks/full.yaml --out runs/full

# Table I on all four demo fields x three input sets, scored against ground truth
# (12 trainings; at STEPS=300 about 20 min on 2 CPU cores, each stopping once its labels are
# stable); rows stream to runs/table1/table1.md
STEPS  ?= 300
table1: $(VENV)/.installed
	$(PY) bench/table1.py --steps $(STEPS) --out runs/table1

# the fast suite on TEST_WORKERS processes (pytest-xdist), one test file per process, the longest
# files first (tests/conftest.py: LONGEST_FIRST), in collection order: on a slow 2-core machine
# 4 min 07 s of pytest with xdist's own order -> 2 min 35 s; on a slower one, with smaller
# trainings in the tests of the training's starts, 3 min 07 s -> 2 min 29 s (4 min 19 s on a fresh
# clone, install included)
TEST_WORKERS ?= 2
test: $(VENV)/.installed
	$(PY) -m pytest -q -m "not slow and not browser" -n $(TEST_WORKERS) --dist loadfile \
	    --no-loadscope-reorder

test-slow: $(VENV)/.installed-slow
	$(PY) -m pytest -q -m "slow and not browser"

test-browser: $(VENV)/.installed-browser
	$(PY) -m pytest -q -m browser

# the course site: the notebooks as `make demo` executed them (run first if missing)
book: $(VENV)/.installed
	test -f $(RUN)/06_evaluate.ipynb || $(MAKE) demo
	$(PY) -m cellnb.book --run $(RUN) --out runs/book

clean-runs:
	rm -rf runs/
