# Loop CRM: `make run` starts everything on embedded defaults, `make test` runs every test.
# Both set up .venv from the pinned requirements on first use; only Python 3.11 is needed.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
PIP_FLAGS ?= --disable-pip-version-check --quiet

.DEFAULT_GOAL := help
.PHONY: help install install-dev browser setup run test test-integration lint format messages compilemessages demo clean

help:
	@echo "make run      set up .venv, migrate, load demo data, start web + worker + beat (Ctrl-C stops all)"
	@echo "make test     set up .venv with test tools, lint, and run the whole suite"
	@echo "make lint     ruff check and ruff format --check"
	@echo "make format   ruff format and ruff check --fix"
	@echo "make messages update locale/ko/LC_MESSAGES/django.po from the source"

$(VENV)/.installed: requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install $(PIP_FLAGS) -r requirements.txt
	@touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt $(VENV)/.installed
	$(BIN)/pip install $(PIP_FLAGS) -r requirements-dev.txt
	@touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# The browser tests drive Debian's Chromium, with a Korean font for readable screenshots; install them when missing
# (needs root or sudo, as on CI and dev machines).
CHROMIUM ?= /usr/bin/chromium
browser:
	@{ test -x $(CHROMIUM) && fc-list :lang=ko | grep -q .; } || { echo "Installing Debian's chromium and fonts-nanum"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium fonts-nanum >/dev/null || { \
	    echo "Could not install them: install Debian's chromium and fonts-nanum, or set LOOP_CHROMIUM"; exit 1; }; }

compilemessages: $(VENV)/.installed
	@$(PY) manage.py compilemessages --ignore=.venv --verbosity 0

setup: install compilemessages
	$(PY) manage.py migrate --noinput
	$(PY) manage.py load_demo
	$(PY) manage.py ensure_admin

run: setup
	@echo "Starting web (http://127.0.0.1:$${LOOP_WEB_PORT:-8000}/admin/), Celery worker and celery-beat. Ctrl-C stops all."
	$(PY) -m config.devrun Procfile.dev

test: install-dev browser compilemessages lint
	$(BIN)/pytest

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

messages: install
	$(PY) manage.py makemessages --locale ko --ignore=.venv --ignore=var --ignore=bench --no-obsolete --no-location
	$(PY) manage.py makemessages --locale ko --domain djangojs --ignore=.venv --ignore=var --ignore=static/vendor --no-obsolete --no-location

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
