# mailwarden — the two commands a newcomer needs are `make run` and `make test`.
# Both install whatever is missing first (Debian packages as root, then a
# virtualenv in .venv with the package and its test tools).

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
APT_PACKAGES := redis-server postfix clamav-daemon clamav clamav-testfiles \
	libmilter-dev python3-dev python3-venv gcc swaks p7zip-full zip unzip publicsuffix \
	prometheus chromium dovecot-imapd
PYTEST_ARGS ?=
# inspect/: libarchive decodes compressed RAR and 7z coders we do not (libarchive13, through
# libarchive-c); bsdtar is one of the extractors the adversarial corpus is checked against.
APT_PACKAGES += libarchive13 libarchive-tools
# Only `make test-containers` needs these (podman as POSTFIX-FACTS.md describes it,
# debootstrap for the local base image, python3-yaml for containers/compose.py).
CONTAINER_APT_PACKAGES := podman runc debootstrap uidmap python3-yaml

.PHONY: run test deps venv lint typecheck bench-policyd clean container-deps test-containers

deps:
	@missing=$$(for p in $(APT_PACKAGES); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; \
	  done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections; \
	  apt-get update -q && apt-get install -y -q --no-install-recommends $$missing; \
	fi

$(VENV)/.installed: setup.cfg pyproject.toml | deps
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,fast]'
	touch $@

venv: $(VENV)/.installed

# `make test` (what CI runs) = the default pytest run, then the fault suite (about 3
# minutes; with PYTEST_ARGS given, only the default run).
test: venv
	$(PY) -m pytest $(PYTEST_ARGS)
ifeq ($(strip $(PYTEST_ARGS)),)
	$(MAKE) --no-print-directory test-faults
endif

# The fault suite (tests/faults, marker `faults`, not in the default pytest run): real
# Postfix, Redis, clamd and both daemons under load, one fault per row; prints its table.
.PHONY: test-faults
test-faults: venv
	$(PY) -m pytest tests/faults

# The container suite: build the three images (containers/build.sh; the base image is
# made here with debootstrap) and run containers/tests against `single` and `ha`.
container-deps:
	@missing=$$(for p in $(CONTAINER_APT_PACKAGES); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; \
	  done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -q && apt-get install -y -q --no-install-recommends $$missing; \
	fi

test-containers: venv container-deps
	containers/build.sh
	$(PY) -m pytest -p no:cacheprovider containers/tests $(PYTEST_ARGS)

run: venv
	$(PY) -m harness

lint: venv
	$(VENV)/bin/ruff check mailwarden harness tests benchmarks
	$(VENV)/bin/mypy

bench-policyd: venv
	$(PY) -m benchmarks.policyd_load --report benchmarks/policyd.md

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .mypy_cache .ruff_cache run sandbox
