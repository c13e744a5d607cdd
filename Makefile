# Every target creates what it needs: the virtual environment (.venv) and, for
# anything that talks to Kafka, the local broker's jars (resolved with Maven).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help venv test test-unit demo sweep-demo bench bench-core bench-audit bench-sweep broker broker-stop clean

help:
	@echo "make demo        run the main job end to end"
	@echo "make test        run every test"
	@echo "make bench       worker vs plain aiokafka loop vs straightforward Faust agent"
	@echo "make bench-core  decisions per second of the pure engine"
	@echo "make bench-audit audit throughput over a 100,000-signal history on the broker"
	@echo "make sweep-demo  a generated history swept over the three policies and a grid (table, plots)"
	@echo "make bench-sweep sizer sweep: 100,000 signals x 12 configurations, wall time"
	@echo "make broker / broker-stop   start / stop the local Kafka broker"
	@echo "make broker-secured / broker-secured-stop   the same broker on SASL_SSL with ACLs (127.0.0.1:19094)"

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

# No broker: a generated journal; plots and CSV under .sizer-data/sweep-demo/.
sweep-demo: $(STAMP)
	$(BIN)/python -m streams.history.sweep_demo

# The worker against a plain aiokafka loop and a straightforward Faust agent.
# Uses KAFKA_BOOTSTRAP_SERVERS when set, else starts the local broker.
bench: $(STAMP)
	@if [ -z "$$KAFKA_BOOTSTRAP_SERVERS" ]; then deploy/broker/broker.sh start >/dev/null; fi
	$(BIN)/python -m streams.bench.stream

bench-core: $(STAMP)
	$(BIN)/python -m streams.bench.core

bench-sweep: $(STAMP)
	$(BIN)/python -m streams.bench.sweep

# Uses KAFKA_BOOTSTRAP_SERVERS when set, else starts the local broker.
bench-audit: $(STAMP)
	@if [ -z "$$KAFKA_BOOTSTRAP_SERVERS" ]; then deploy/broker/broker.sh start >/dev/null; fi
	$(BIN)/python -m streams.bench.audit

broker:
	@deploy/broker/broker.sh start

broker-stop:
	@deploy/broker/broker.sh stop

# SASL_SSL (SCRAM-SHA-512), its own CA, the StandardAuthorizer; each user's settings
# in .kafka-secured/clients/<user>.env (README, "Security")
broker-secured:
	@KAFKA_SECURITY=sasl_ssl deploy/broker/broker.sh start

broker-secured-stop:
	@KAFKA_SECURITY=sasl_ssl deploy/broker/broker.sh stop

clean:
	rm -rf $(VENV) .kafka .kafka-secured .pytest_cache .hypothesis
