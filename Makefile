# archon-diag — the two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup sysdeps demo test lint bench clean

setup: $(STAMP)

# System packages: PostgreSQL server + contrib (pg_stat_statements, auto_explain), gdb
# (memray attach) and a C compiler (on CPUs with AMX gdb 13 needs a small preload that
# probes.memray builds). Installed with apt-get only when absent.
sysdeps:
	@missing=""; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 \
	  || missing="$$missing postgresql postgresql-contrib"; \
	ls /usr/share/postgresql/*/extension/pg_stat_statements.control >/dev/null 2>&1 \
	  || case "$$missing" in *contrib*) ;; *) missing="$$missing postgresql-contrib";; esac; \
	command -v gdb >/dev/null 2>&1 || missing="$$missing gdb"; \
	command -v cc >/dev/null 2>&1 || missing="$$missing gcc"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing system packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else \
	    echo "missing system packages:$$missing -- run: sudo apt-get install$$missing" >&2; exit 3; \
	  fi; \
	fi

$(STAMP): pyproject.toml
	@$(MAKE) --no-print-directory sysdeps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $(STAMP)

demo: setup
	$(BIN)/archon-diag demo

test: setup
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: setup
	$(BIN)/python -m tests.bench

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
