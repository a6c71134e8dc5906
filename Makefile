# Yungu 云谷 — two commands on a fresh machine:
#   make run    set up .venv and start the platform with the embedded six-region world
#   make test   set up (incl. PostgreSQL, Slurm, munge from Debian) and run the whole test suite
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
APT_PKGS := postgresql slurm-wlm munge bubblewrap util-linux

.PHONY: run test check system-deps sandbox-deps bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,ray]'
	touch $(STAMP)

run: $(STAMP) sandbox-deps
	$(BIN)/yungu server --demo --data-dir .yungu

# The local executor's job sandbox (docs/security.md) needs bubblewrap; without it local jobs are refused.
sandbox-deps:
	@command -v bwrap >/dev/null 2>&1 || { \
	  echo "installing bubblewrap from Debian (the job sandbox)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  ($$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq bubblewrap >/dev/null) || \
	  echo "could not install bubblewrap: local jobs will be refused until it is installed"; }

system-deps:
	@missing=""; \
	command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v slurmctld >/dev/null 2>&1 || missing="$$missing slurm-wlm"; \
	command -v munged >/dev/null 2>&1 || missing="$$missing munge"; \
	command -v bwrap >/dev/null 2>&1 || missing="$$missing bubblewrap"; \
	command -v setpriv >/dev/null 2>&1 || missing="$$missing util-linux"; \
	if [ -n "$$missing" ]; then \
	  echo "installing from Debian:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

test: $(STAMP) system-deps
	$(BIN)/pytest -q -p no:cacheprovider

check: $(STAMP)
	$(BIN)/ruff check yungu tests bench
	$(BIN)/mypy yungu/domain yungu/engines yungu/ports yungu/control yungu/testing
	$(BIN)/lint-imports

bench: $(STAMP)
	@echo "each benchmark is one command; see BENCHMARKS.md"

clean:
	rm -rf $(VENV) .yungu
