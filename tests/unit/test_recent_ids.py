from hypothesis import given
from hypothesis import strategies as st

from streams.engine.recent import RecentIds


@given(st.lists(st.integers(0, 10_000), max_size=600), st.integers(1, 300))
def test_window_remembers_at_least_the_last_capacity_ids_and_stays_bounded(ids, capacity):
    window = RecentIds()
    for item in ids:
        window = window.add(str(item), capacity)
    for item in ids[-capacity:]:
        assert str(item) in window
    assert len(window) <= capacity + min(64, capacity)
    assert RecentIds.from_wire(window.to_wire()) == window
