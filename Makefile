# The two commands a learner needs:  make start   and   make test
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PORT   ?= 8888
JUPYTER_ARGS ?=
LAB_ROOT ?= $(CURDIR)
# Jupyter refuses to run as root unless told; containers and CI machines often are root.
ROOT_ARG := $(if $(filter 0,$(shell id -u)),--allow-root)
# JupyterLab's news and update checks fetch from the internet and pop up over lesson 1: off,
# in the server (LAB_ARGS) and in the settings of this venv's JupyterLab (LAB_SETTINGS).
LAB_ARGS := --LabApp.news_url=None --LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate
LAB_SETTINGS := $(VENV)/share/jupyter/lab/settings/overrides.json
# After the main run, `make test` runs the tests that talk to Postgres again against two more
# servers started from the wheel's binaries (tests/servers.py), on a TCP port with a password:
# one like docker-compose.yml's (a superuser), one like a managed service's (no superuser).
# `make test SERVERS=` leaves them out.
SERVERS ?= compose managed
# The compose-like server differs from the built-in one in its role, TCP and passwords: the tests
# that touch those. The managed-like one (PostgreSQL 16, no superuser): every test on Postgres and
# the notebooks. The grader runs servers of its own, whatever DATABASE_URL says: only its scoring
# (test_checks, test_culprits) reads the learner's database.
TESTS_compose := tests/test_db.py tests/test_search.py tests/test_corpus_table.py tests/test_bench.py \
	tests/test_checks.py tests/test_culprits.py tests/test_generate.py \
	--deselect tests/test_db.py::test_ivfflat_and_hnsw_build_on_10000_x_1536
TESTS_managed := tests/test_db.py tests/test_search.py tests/test_hybrid.py tests/test_store.py \
	tests/test_index.py tests/test_corpus_table.py tests/test_checks.py tests/test_culprits.py \
	tests/test_bench.py tests/test_generate.py lessons solutions

.PHONY: start test setup lint clean-db generate validate test-here

start: $(STAMP) $(LAB_SETTINGS)
	$(BIN)/pgvec-course db start
	$(BIN)/jupyter lab --ServerApp.root_dir="$(LAB_ROOT)" --LabApp.default_url=/lab/tree/lessons \
		--port=$(PORT) $(ROOT_ARG) $(LAB_ARGS) $(JUPYTER_ARGS)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/pgvec-course doctor
	$(BIN)/python -m pytest -rs
	$(if $(SERVERS),$(MAKE) --no-print-directory $(SERVERS:%=test-on-%))

# A second server of the kind named (compose or managed), the tests above against it, then gone.
test-on-%: $(STAMP)
	$(BIN)/python tests/servers.py $* -- $(MAKE) --no-print-directory test-here TESTS="$(TESTS_$*)"

# The health check and the TESTS named, against the server DATABASE_URL names.
test-here: $(STAMP)
	$(BIN)/pgvec-course doctor
	$(BIN)/python -m pytest -rs $(TESTS)

setup: $(STAMP) $(LAB_SETTINGS)

$(LAB_SETTINGS): jupyter/overrides.json $(STAMP)
	install -D -m 644 $< $@

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "pgvec-course needs Python 3.10 or newer; run: make PYTHON=python3.11 ...")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,chroma]"
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

generate: $(STAMP)
	$(BIN)/pgvec-course generate

validate: $(STAMP)
	$(BIN)/pgvec-course validate

clean-db: $(STAMP)
	-$(BIN)/pgvec-course db stop
	rm -rf .pgdata .pgdata-test
