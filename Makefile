# The two commands a newcomer needs: `make dev` and `make test`. Both build .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: dev test lint system-packages

$(STAMP): pyproject.toml requirements/relay.txt requirements/worker.txt requirements/dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements/dev.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

# Run the relay, the AWS emulation and the worker on this machine.
dev: $(STAMP)
	$(BIN)/sesrelay dev

# Debian packages the tests use as real tools (swaks, the SMTP client; pflogsumm, the
# oracle of the maillog format); installed when missing.
system-packages:
	@command -v swaks >/dev/null && { command -v pflogsumm || test -x /usr/sbin/pflogsumm; } \
	  >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq swaks pflogsumm; \
	  else echo "the tests need swaks and pflogsumm: sudo apt-get install swaks pflogsumm" >&2; \
	    exit 1; fi; }

lint: $(STAMP)
	$(BIN)/ruff check .

# Every test: unit, SMTP over real sockets against moto, sesrelay dev end to end, CDK gates.
# Three pytest processes, each taking whole test files (the CDK files together, so that
# one process synthesizes the environments: tests/conftest.py), the soaks and the CDK
# files first: most tests wait on sockets and on the AWS emulation, so three keep two
# CPUs busy.
test: $(STAMP) system-packages lint
	$(BIN)/pytest -n 3 --dist loadfile
