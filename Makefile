# Every target creates what it needs: the virtual environment (.venv) and, for
# anything that talks to Kafka, the local broker's jars (resolved with Maven).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help venv test test-unit demo bench-core broker broker-stop clean

help:
	@echo "make demo        run the main job end to end"
	@echo "make test        run every test"
	@echo "make bench-core  decisions per second of the pure engine"
	@echo "make broker / broker-stop   start / stop the local Kafka broker"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,plot]'
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest tests

test-unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit tests/acceptance

demo: $(STAMP)
	$(BIN)/python -m streams.demo

bench-core: $(STAMP)
	$(BIN)/python -m streams.bench.core

broker:
	@deploy/broker/broker.sh start

broker-stop:
	@deploy/broker/broker.sh stop

clean:
	rm -rf $(VENV) .kafka .pytest_cache .hypothesis
