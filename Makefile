# chaosfm: `make demo` installs and runs the main job; `make test` installs the dev lock and tests.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test install install-dev lock bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"

install: $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .

install-dev: $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.lock
	$(BIN)/pip install --quiet --no-deps -e .
	@# The browser test renders report.html in headless Chromium (it skips without one).
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u 2>/dev/null)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && apt-get install -y -qq chromium) || echo "note: could not install chromium; tests/report/test_browser.py will skip"; \
	  else \
	    echo "note: no chromium (install it as root: apt-get install -y chromium); tests/report/test_browser.py will skip"; \
	  fi; }
	@# The PostgreSQL tuning test starts a throw-away server from Debian's postgresql (it skips without one).
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || { \
	  if [ "$$(id -u 2>/dev/null)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) || echo "note: could not install postgresql; tests/jobs/test_tune_postgres.py will skip"; \
	  else \
	    echo "note: no PostgreSQL server (install it as root: apt-get install -y postgresql); tests/jobs/test_tune_postgres.py will skip"; \
	  fi; }

demo: install
	$(BIN)/chaosfm demo --fast

test: install-dev
	$(BIN)/python -m pytest -q -n 2

# Regenerate the lock files from pyproject.toml (then run `make test`).
lock: $(BIN)/python
	$(BIN)/pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml -o requirements.lock --python-version 3.11
	$(BIN)/uv pip compile pyproject.toml --extra dev -o requirements-dev.lock --python-version 3.11

bench: install-dev
	for script in bench/*.py; do $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
