from streams.worker.positions import StallWatch


def test_a_partition_is_stalled_only_after_a_whole_interval_without_progress_behind_the_fetch():
    watch = StallWatch()
    assert not watch.stalled("tp", position=10, fetched=50)  # first look: maybe just busy
    assert not watch.stalled("tp", position=20, fetched=50)  # it moved
    assert watch.stalled("tp", position=20, fetched=50)  # it did not, and faust is past it
    assert not watch.stalled("tp", position=50, fetched=50)  # caught up
    assert not watch.stalled("tp", position=50, fetched=50)  # idle is not stalled
    assert not watch.stalled("tp", position=50, fetched=None)  # position unknown mid-rebalance
    assert not watch.stalled("tp", position=50, fetched=60)
    assert not watch.stalled("other", position=50, fetched=60)  # per partition
    assert watch.stalled("tp", position=50, fetched=60)
