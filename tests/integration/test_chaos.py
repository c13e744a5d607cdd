"""The short form of `make chaos` on the three-broker cluster: the leader of most
signals partitions killed, the transaction coordinator killed, a worker killed and
a rolling restart of the workers, under a steady stream with fills. Whatever the
stalls (printed, never asserted), no signal is lost or decided twice, no order
appears twice, the audit verifies every decision, and no worker exits but the
one killed."""

from __future__ import annotations

from streams.bench.chaos import report, run_chaos


def test_no_loss_no_duplicate_and_no_worker_exit_through_the_faults(cluster, tmp_path):
    cluster.start()  # a node an earlier test killed
    result = run_chaos(cluster, tmp_path, workers=2, rate=60, portfolios=300, settle_s=8,
                       faults=("broker leader", "transaction coordinator", "worker kill", "worker rolling restart"))
    print(report(result))
    assert (result.missing, result.duplicates, result.duplicate_orders) == (0, 0, 0), report(result)
    assert result.decisions == result.signals
    assert result.audit_code == 0 and not result.audit.get("mismatches"), report(result)
    assert result.audit["verified"] == result.signals
    assert result.exits == [], report(result)
