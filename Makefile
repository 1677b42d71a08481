# smtpadmin: `make run` starts the whole embedded setup, `make test` checks everything.
# Only Python 3.11+ is needed: the virtual environment, the SQLite database and the
# filesystem broker are created on the way. Settings in a .env file are honoured (via honcho).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Re-install only when pyproject.toml is newer than the last install.
STAMP := $(VENV)/.installed
# `honcho run` loads .env, so the setup steps see the same settings as the processes.
WITH_ENV := $(BIN)/honcho run

.PHONY: run install lint test soak bench clean

run: install
	$(WITH_ENV) $(BIN)/python manage.py migrate --noinput
	$(WITH_ENV) $(BIN)/python manage.py createadmin
	$(WITH_ENV) $(BIN)/python manage.py seedorg
	$(WITH_ENV) $(BIN)/python manage.py collectstatic --noinput --verbosity 0
	@echo "Starting web (http://127.0.0.1:8000/), relay, worker and beat; Ctrl-C stops all."
	PATH="$(CURDIR)/$(BIN):$$PATH" PYTHONUNBUFFERED=1 $(BIN)/honcho start -f Procfile

install: $(STAMP)

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "smtpadmin needs Python 3.11 or newer (PYTHON=$(PYTHON))." >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .

# Test processes (pytest-xdist; 0 = serial). Measured on 2 cores: 3 or 4 workers cost more CPU
# than their socket waits save. Each worker takes one Redis database (see tests/isolation.py).
TEST_WORKERS ?= 2

test: lint
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadgroup

# The long runs (about an hour and a half): the ledger fault tests with SMTPADMIN_LEDGER_N
# messages per fault (10,000 unless set; prints the ledger figures), the hostile-client fuzzing
# of the SMTP listener and the API against its schema with many more generated inputs.
soak: install
	SMTPADMIN_SOAK=1 SMTPADMIN_LEDGER_N=$${SMTPADMIN_LEDGER_N:-10000} \
		$(BIN)/pytest tests/ledger tests/relay/test_fuzz_smtp.py tests/smtpadmin/test_schemathesis.py \
		-m "soak or not e2e" -p no:cacheprovider --timeout 14400 -rs

# The throughput against Postfix in one interleaved run (bench/README.md): installs Postfix
# (for smtp-source, smtp-sink and the reference relay) and matplotlib, then prints the table and
# writes bench/results/. BENCH_QUICK=1 for a short run, BENCH_REPS=N repetitions (default 3),
# BENCH_ARGS for more options (python -m bench.run --help).
BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): pyproject.toml | $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	sh bench/ensure_postfix.sh
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# Removes the environment and caches; never var/ (the embedded database and queues live there).
clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis *.egg-info build
	find . -path ./var -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
