# Every target creates what it needs: the virtual environment (.venv) and, for
# anything that talks to Kafka, the local broker's jars (resolved with Maven).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# `make bench` alone: the product with the `bench` extra (Quix Streams) in its own
# environment, since Quix Streams pins pydantic below the product's
BENCH_VENV := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed
BENCH_ARGS ?=
MINUTES ?= 30
CHAOS_ARGS ?=
RECOVERY_ARGS ?=
# The Kafka release of the local broker and the broker tests: empty is deploy/pom.xml's
# default (3.9.x); `make test KAFKA_VERSION=4.4.0` runs every test on 4.4.0. Each
# release has its own jars (.kafka/libs/<version>) and data (.kafka/data/<version>).
KAFKA_VERSION ?=
export KAFKA_VERSION
# The newest Kafka 4.x that resolves and runs here, and the broker tests CI runs on it
# too (`make test-kafka4`): exactly-once, crash, failover, positions, controls,
# security, and what Kafka itself enforces (replication, record timestamps).
KAFKA4_VERSION ?= 4.4.0
KAFKA4_TESTS ?= tests/integration/test_worker_pipeline.py tests/integration/test_crash.py \
	tests/integration/test_failover.py tests/integration/test_positions.py tests/integration/test_controls.py \
	tests/integration/test_secured.py tests/integration/test_kafka_rules.py
# CI runs each broker test once: KAFKA4_TESTS on Kafka 4.x and the rest on the default
# release, except the tests of each release's own rules, which run on both. Exactly-once
# through broker and worker kills stays tested on 3.9 by the cluster and chaos tests.
KAFKA_BOTH_TESTS ?= tests/integration/test_kafka_rules.py
CI_DEFAULT_IGNORE := $(addprefix --ignore=,$(filter-out $(KAFKA_BOTH_TESTS),$(KAFKA4_TESTS)))
# Extra pytest arguments of `make test` (CI passes CI_DEFAULT_IGNORE)
TEST_ARGS ?=

.PHONY: help venv bench-venv test test-unit test-kafka4 demo sweep-demo bench bench-core bench-instructions bench-audit bench-sweep evaluate soak chaos bench-recovery broker broker-stop broker-secured broker-secured-stop cluster cluster-stop clean

help:
	@echo "make demo        run the main job end to end"
	@echo "make test        run every test"
	@echo "make test-unit   the unit and acceptance tests alone: no broker"
	@echo "make test KAFKA_VERSION=4.4.0   every test on another Kafka release: 3.9.x or 4.x (default: deploy/pom.xml's 3.9.x)"
	@echo "make test-kafka4 the exactly-once, crash, failover, positions, controls, security and Kafka-rules tests on KAFKA4_VERSION"
	@echo "make bench       worker vs bare loop, plain aiokafka loop, Faust agent, Quix Streams (BENCH_ARGS=...)"
	@echo "make soak        the worker at 1,000 signals/s with fills for MINUTES (30): RSS, p99, lag a minute"
	@echo "make bench-core  decisions per second of the pure engine"
	@echo "make bench-instructions  instructions per signal of the pure engine under cachegrind"
	@echo "make bench-audit audit throughput over a 100,000-signal history on the broker"
	@echo "make sweep-demo  a generated history swept over the three policies and a grid (table, plots)"
	@echo "make bench-sweep sizer sweep: 100,000 signals x 12 configurations, wall time"
	@echo "make chaos       exactly-once workers on the 3-broker cluster through broker and worker faults: stalls, counts, audit"
	@echo "make bench-recovery  a worker's restart (clean, SIGKILL) with 1,000 / 100,000 / 1,000,000 portfolios: time to first decision"
	@echo "make evaluate    the graduated design's promises on real markets (table, JSON, CSV, plots in .sizer-data/evaluate)"
	@echo "make broker / broker-stop   start / stop the local Kafka broker (KAFKA_VERSION=... for another release)"
	@echo "make cluster / cluster-stop start / stop the local 3-broker cluster (replication 3, min ISR 2; 127.0.0.1:19101-19103)"
	@echo "make broker-secured / broker-secured-stop   the same broker on SASL_SSL with ACLs (127.0.0.1:19094)"
	@echo "make venv        .venv: the project with its test and plot extras (targets that need it make it)"
	@echo "make bench-venv  .venv-bench: the project with Quix Streams, for make bench (which makes it)"
	@echo "make clean       remove .venv, .venv-bench, the local brokers' data and jars (.kafka, .kafka-secured, .kafka-cluster), the local Schema Registry build (.registry), .sizer-data, the test caches"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,plot]'
	touch $(STAMP)

venv: $(STAMP)

$(BENCH_STAMP): pyproject.toml
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/pip install --quiet -e '.[bench]'
	touch $(BENCH_STAMP)

bench-venv: $(BENCH_STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest tests $(TEST_ARGS)

test-unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit tests/acceptance

test-kafka4: $(STAMP)
	KAFKA_VERSION=$(KAFKA4_VERSION) $(BIN)/python -m pytest $(KAFKA4_TESTS)

demo: $(STAMP)
	$(BIN)/python -m streams.demo

# No broker: a generated journal; plots and CSV under .sizer-data/sweep-demo/.
sweep-demo: $(STAMP)
	$(BIN)/python -m streams.sweep_demo

# The worker against a bare consume-and-produce loop, a plain aiokafka loop, a
# straightforward Faust agent and a Quix Streams application (run from .venv-bench);
# BENCH_ARGS picks parts, e.g. BENCH_ARGS="--runs scale" or BENCH_ARGS='--only "(3)" --runs latency,hog'.
# Uses KAFKA_BOOTSTRAP_SERVERS when set, else starts the local broker.
bench: $(STAMP) $(BENCH_STAMP)
	@if [ -z "$$KAFKA_BOOTSTRAP_SERVERS" ]; then deploy/broker/broker.sh start >/dev/null; fi
	$(BIN)/python -m streams.bench.stream $(BENCH_ARGS)

# The worker at 1,000 signals/s with fills for MINUTES minutes (default 30).
# Uses KAFKA_BOOTSTRAP_SERVERS when set, else starts the local broker.
soak: $(STAMP)
	@if [ -z "$$KAFKA_BOOTSTRAP_SERVERS" ]; then deploy/broker/broker.sh start >/dev/null; fi
	$(BIN)/python -m streams.bench.soak --minutes $(MINUTES)

# Real market history from the arch and backtesting packages (the test extra has them).
evaluate: $(STAMP)
	$(BIN)/sizer evaluate --out .sizer-data/evaluate --journals .sizer-data/evaluate/journals

bench-core: $(STAMP)
	$(BIN)/python -m streams.bench.core

bench-instructions: $(STAMP)
	$(BIN)/python -m streams.bench.instructions

bench-sweep: $(STAMP)
	$(BIN)/python -m streams.bench.sweep

# Uses KAFKA_BOOTSTRAP_SERVERS when set, else starts the local broker.
bench-audit: $(STAMP)
	@if [ -z "$$KAFKA_BOOTSTRAP_SERVERS" ]; then deploy/broker/broker.sh start >/dev/null; fi
	$(BIN)/python -m streams.bench.audit

# Starts the local 3-broker cluster (.kafka-cluster) unless it runs; `make cluster-stop` stops it.
chaos: $(STAMP)
	$(BIN)/python -m streams.bench.chaos $(CHAOS_ARGS)

# Uses KAFKA_BOOTSTRAP_SERVERS when set, else starts the local broker.
bench-recovery: $(STAMP)
	@if [ -z "$$KAFKA_BOOTSTRAP_SERVERS" ]; then deploy/broker/broker.sh start >/dev/null; fi
	$(BIN)/python -m streams.bench.recovery $(RECOVERY_ARGS)

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

# three nodes, each broker and controller; topics replicated 3 with min.insync.replicas 2
cluster:
	@deploy/broker/cluster.sh start

cluster-stop:
	@deploy/broker/cluster.sh stop

clean:
	rm -rf $(VENV) $(BENCH_VENV) .kafka .kafka-secured .kafka-cluster .registry .sizer-data .pytest_cache .hypothesis
