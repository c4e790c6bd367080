# Two commands for a new user: `make run` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CONFIG ?= channels.yaml
SOAK_MINUTES ?= 10
SOAK_FLAGS   ?=

.PHONY: install run test lint typecheck pytest fuzz bench soak clean schema

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	mkdir -p var/log
	@$(BIN)/python -c 'import sys; from engine.web.server import announce; announce(sys.argv[1])' \
		$(CONFIG) 2>/dev/null || true
	$(BIN)/hl7-engine run --config $(CONFIG)

lint: $(STAMP)
	$(BIN)/ruff check engine tests bench

typecheck: $(STAMP)
	$(BIN)/mypy --strict engine

schema: $(STAMP)  # the JSON Schema of channels.yaml, for editors (tests/test_config_schema.py)
	$(BIN)/python -c "from engine.config.schema import json_schema; print(json_schema(), end='')" \
	  > docs/channels.schema.json

pytest: $(STAMP)
	$(BIN)/pytest -q

test: lint typecheck pytest

# Random frames through the decoder and the pipeline for FUZZ_MINUTES; new crashers go to
# tests/corpus/ (replayed by tests/test_fuzz.py). FUZZ_SEED repeats a run; FUZZ_ARGS takes
# --strict (a channel with hl7apy validation) and --postgres (a throw-away cluster).
FUZZ_MINUTES ?= 10
fuzz: $(STAMP)
	$(BIN)/python tests/fuzz.py --minutes $(FUZZ_MINUTES) $(if $(FUZZ_SEED),--seed $(FUZZ_SEED)) $(FUZZ_ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench.run
	$(BIN)/python -m bench.run --mix ref,siu --rss-messages 0 --messages 5000
	$(BIN)/python -m bench.run --mix ref,siu --rss-messages 0 --messages 5000 --workers 2
	$(BIN)/python -m bench.run --mix ref,siu --rss-messages 0 --messages 5000 --tls
	$(BIN)/python -m bench.ledger
	$(BIN)/python -m bench.delivery
	$(BIN)/python -m bench.delivery --workers 2
	$(BIN)/python -m bench.pipelined
	$(BIN)/python -m bench.web
	$(BIN)/python -m bench.pgscale
	$(BIN)/python -m bench.soak --minutes 1

# The soak alone, longer (docs/performance.md); e.g. SOAK_FLAGS="--no-hostile poison".
soak: $(STAMP)
	$(BIN)/python -m bench.soak --minutes $(SOAK_MINUTES) $(SOAK_FLAGS)

clean:
	rm -rf $(VENV) var build *.egg-info
