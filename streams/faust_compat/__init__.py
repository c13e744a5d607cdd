"""The only code that touches private names of faust-streaming (and mode-streaming,
its service framework) or aiokafka.

The worker needs several things faust-streaming 0.15.3 (mode-streaming 0.7.1) and
aiokafka 0.14.0 do not do right (docs/pages/exactly-once.md, "Exactly-once, and the faust-streaming defects it works
around"); each workaround lives in one module here, next to the defect it
answers (the assignor's lives in `streams/worker/assignor.py`):

| module | defect (docs/pages/exactly-once.md) |
|---|---|
| `events`    | outputs and table writes must be routed by the input being processed: faust's current event |
| `outputs`   | outputs of topics the app does not consume are sent outside the input's transaction (faust #177); table writes through faust's producer buffer are slow and its flush can return early (`Outputs`) |
| `transport` | commits in the middle of a batch (faust #517); ack-derived offsets that skip records (#596, #606); a promoted standby's recovery crashing on cached stable offsets; pauses that never reach aiokafka; a fetch loop that sleeps a second whenever every partition is paused; the per-record conductor path; a 1,500 ms fetch wait that held every input back behind a partial fetch; transactions committed, and their producers started, one after another |
| `app`       | a rebalance that starts while a batch is half done |
| `recovery`  | active recovery that ends only after two empty 5 s polls under exactly-once (#47); a seek to None or -2 that crashed recovery when a worker rejoined mid-takeover; a second's sleep before the tables register, which the group join waits for; under per-worker transactions, the previous owners' open transactions waited for here, outside the rebalance callback |
| `checkpoint`| active stores that never learn their changelog offsets under exactly-once |
| `stores`    | each database's options built by faust from a fixed set of keys: no write-buffer budget shared by the stores |
| `worker`    | two seconds of fixed waits (mode's `Worker._shutdown_loop`) between a worker's last commit and the end of its process, which a restart's partitions wait for; a last line printed to `sys.stderr`, which mode's Worker turns into a WARNING log line (`stop_now`) |
| `membership`| a worker whose group.instance.id another worker took: faust's assignor asserts its own URL on the assignment it takes over, aiokafka heartbeats without the instance id (so the broker cannot say FENCED_INSTANCE_ID) and knows no error 82; a worker of another commit form (guarantee, transactions) in the group, which nothing fences |
| `oauth`     | an OAUTHBEARER token the broker refuses is taken for success, and the refusal surfaces as a dropped connection |
| `group_commit` | aiokafka sends a transaction's offsets without the group's metadata (`TxnOffsetCommit` v0, no KIP-447): only a producer per input partition is fenced |
| `worker_transactions` | one transactional producer per worker (`SIZER_TRANSACTIONS=per_worker`), fenced by the group's generation through `group_commit` |

`SUPPORTED` names the versions this was written and tested against, and
`PRIVATE_NAMES` every private name used; `check()` (run at start-up and by
`tests/unit/test_faust_compat.py`) fails loudly, naming the name, when an
upgrade moved one. Nothing outside this package imports a private name of
either library.
"""

from __future__ import annotations

import importlib
from importlib.metadata import version

SUPPORTED = {"faust-streaming": "0.15.3", "aiokafka": "0.14.0", "mode-streaming": "0.7.1"}

# (module, attribute path) of every private name this package relies on.
PRIVATE_NAMES: tuple[tuple[str, str], ...] = (
    ("faust.streams", "_current_event"),
    ("faust.app.base", "App._new_transport"),
    ("faust.app.base", "App._on_partitions_revoked"),
    ("faust.app.base", "App._on_partitions_assigned"),
    ("faust.app.base", "App._consumer"),
    ("faust.transport.consumer", "Consumer._drain_messages"),
    ("faust.transport.consumer", "Consumer._add_gap"),
    ("faust.transport.consumer", "Consumer._filter_committable_offsets"),
    ("faust.transport.consumer", "Consumer._commit_offsets"),
    ("faust.transport.consumer", "Consumer._read_offset"),
    ("faust.transport.consumer", "Consumer._wait_next_records"),
    ("faust.transport.consumer", "Consumer._get_active_partitions"),
    ("faust.transport.consumer", "Consumer._commit_every"),
    ("faust.transport.consumer", "Consumer._n_acked"),
    ("faust.transport.consumer", "TransactionManager._tps_to_transactional_ids"),
    ("faust.transport.consumer", "TransactionManager._start_transactions"),
    ("faust.transport.drivers.aiokafka", "Consumer._thread"),
    ("faust.transport.drivers.aiokafka", "AIOKafkaConsumerThread._ensure_consumer"),
    ("faust.transport.drivers.aiokafka", "AIOKafkaConsumerThread._consumer"),
    ("faust.transport.drivers.aiokafka", "Producer._producer"),
    ("faust.transport.drivers.aiokafka", "Producer._transaction_producers"),
    ("faust.transport.drivers.aiokafka", "Producer._trn_locks"),
    ("faust.transport.drivers.aiokafka", "Consumer._new_consumer_thread"),
    ("faust.transport.drivers.aiokafka", "AIOKafkaConsumerThread._create_worker_consumer"),
    ("aiokafka.consumer.consumer", "AIOKafkaConsumer._fetch_max_wait_ms"),
    ("aiokafka.consumer.consumer", "AIOKafkaConsumer._group_instance_id"),
    ("aiokafka.consumer.consumer", "AIOKafkaConsumer._client"),
    ("aiokafka.consumer.consumer", "AIOKafkaConsumer._coordinator"),
    ("aiokafka.protocol.group", "HeartbeatRequest._group"),
    ("aiokafka.protocol.group", "HeartbeatRequest._generation_id"),
    ("aiokafka.protocol.group", "HeartbeatRequest._member_id"),
    ("faust.assignor.partition_assignor", "PartitionAssignor._url"),
    ("faust.assignor.partition_assignor", "PartitionAssignor._compress"),
    ("faust.assignor.partition_assignor", "PartitionAssignor._decompress"),
    ("faust.tables.base", "Collection.data"),
    ("faust.stores.rocksdb", "Store._dbs"),
    ("faust.stores.rocksdb", "RocksDBOptions.as_options"),
    ("faust.tables.manager", "TableManager.persist_offset_on_commit"),
    ("aiokafka.producer.producer", "AIOKafkaProducer._txn_manager"),
    ("aiokafka.producer.transaction_manager", "TransactionManager.wait_for_pid"),
    ("aiokafka.producer.transaction_manager", "TransactionManager._transaction_waiter"),
    ("faust.tables.manager", "TableManager._pending_persisted_offsets"),
    ("faust.tables.recovery", "Recovery._set_recovery_ended"),
    ("faust.tables.recovery", "Recovery._seek_offsets"),
    ("faust.tables.recovery", "Recovery._build_highwaters"),
    ("faust.tables.manager", "TableManager._recovery"),
    ("faust.tables.manager", "TableManager._update_channels"),
    ("asyncio.queues", "Queue._getters"),
    ("aiokafka.conn", "OAuthAuthenticator._token_sent"),
    ("mode.worker", "Worker._shutdown_loop"),
    ("mode.worker", "Worker._gather_all"),
    ("mode.worker", "Worker._sentinel_task"),
    # group_commit, worker_transactions: KIP-447 (TxnOffsetCommit v3)
    ("aiokafka.producer.producer", "AIOKafkaProducer._sender"),
    ("aiokafka.producer.producer", "AIOKafkaProducer._ensure_transactional"),
    ("aiokafka.producer.sender", "Sender._do_txn_offset_commit"),
    ("aiokafka.producer.sender", "Sender._find_coordinator"),
    ("aiokafka.producer.sender", "Sender._txn_manager"),
    ("aiokafka.producer.sender", "BaseHandler._sender"),
    ("aiokafka.producer.sender", "Sender._do_add_partitions_to_txn"),
    ("aiokafka.producer.sender", "BACKOFF_OVERRIDE"),
    ("aiokafka.producer.sender", "TxnOffsetCommitHandler._offsets"),
    ("aiokafka.producer.sender", "TxnOffsetCommitHandler._group_id"),
    ("aiokafka.client", "AIOKafkaClient._wait_on_metadata"),
    ("aiokafka.consumer.consumer", "AIOKafkaConsumer._coordinator"),
    ("aiokafka.consumer.group_coordinator", "GroupCoordinator._group_instance_id"),
    ("faust.transport.drivers.aiokafka", "Producer._new_producer"),
    ("faust.transport.drivers.aiokafka", "Producer._settings_extra"),
    ("faust.transport.drivers.aiokafka", "Producer._producer_type"),
)


class IncompatibleLibrary(RuntimeError):
    """faust-streaming or aiokafka is not what `faust_compat` was written against."""


def _resolve(module: str, path: str) -> bool:
    target: object = importlib.import_module(module)
    for part in path.split("."):
        if hasattr(target, part):
            target = getattr(target, part)
            continue
        # instance attributes set in __init__ are found in its source, not on the class
        init = getattr(target, "__init__", None)
        code = getattr(init, "__code__", None)
        if code is not None and part in code.co_names:
            return True
        return False
    return True


def check() -> None:
    """Raise IncompatibleLibrary naming every private name that moved, and the
    installed versions against `SUPPORTED`."""
    missing = [f"{module}.{path}" for module, path in PRIVATE_NAMES if not _resolve(module, path)]
    if missing:
        installed = ", ".join(f"{name} {version(name)}" for name in SUPPORTED)
        wanted = ", ".join(f"{name} {v}" for name, v in SUPPORTED.items())
        raise IncompatibleLibrary(
            f"streams.faust_compat relies on private names that {installed} do not have: {', '.join(missing)}; "
            f"it supports {wanted} (pinned in pyproject.toml)")
