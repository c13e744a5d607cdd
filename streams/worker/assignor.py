"""The group's assignment, refused on input topics that are not the ones in the spec.

faust-streaming 0.15.3's `PartitionAssignor` groups co-subscribed topics by their
partition count; when `signals` or `fills` is recreated (or repartitioned) with
another count under running workers, the leader's assignment fails with a
KeyError deep in faust and a traceback, and the group loops on it. Here the
leader compares the counts in the cluster metadata with the spec first, and the
worker ends with the one-line message `sizer topics apply` gives (exit 3).
"""

from __future__ import annotations

import logging
from typing import Any

from streams.faust_compat.membership import CommitFormAssignor
from streams.faust_compat.worker import stop_now
from streams.kafka.topics import recreated
from streams.text import counted

log = logging.getLogger("streams.worker")

EXIT_TOPIC_MISMATCH = 3  # as `sizer worker` exits when the topics differ at start-up


def refuse(message: str) -> None:
    """End the worker now with `message`: nothing of the batch under way is committed
    (the stored positions keep it safe), and there is nothing to retry."""
    log.critical("%s", message)
    stop_now(f"sizer: {message}", EXIT_TOPIC_MISMATCH)


class SpecAssignor(CommitFormAssignor):
    """faust's assignor, after a check of the input topics' partition counts; it takes
    over the assignment of a static member whose place it took, in a group of one
    commit form (`CommitFormAssignor`)."""

    def assign(self, cluster: Any, member_metadata: Any) -> Any:
        expected = self.app.inputs.partitions  # the spec's, wired by build_app
        found = []
        for topic, partitions in expected.items():
            actual = len(cluster.partitions_for_topic(topic) or ())
            if actual != partitions:
                found.append(f"{topic}: {counted(actual, 'partition')} on the broker, {partitions} in the spec")
        if found:
            refuse(str(recreated(self.app.conf.id, found)))
        return super().assign(cluster, member_metadata)
