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


def _reference_window(ids, capacities):
    """The window as first specified: chunks of at most min(64, capacity) ids, a new
    chunk once the newest is full, the oldest forgotten once `capacity` is covered without it."""
    chunks: list[set[str]] = []
    for item, capacity in zip(ids, capacities):
        size = min(64, capacity)
        if chunks and len(chunks[-1]) < size:
            chunks[-1] = chunks[-1] | {item}
        else:
            chunks.append({item})
        while len(chunks) > 1 and sum(map(len, chunks)) - len(chunks[0]) >= capacity:
            chunks.pop(0)
    return [sorted(chunk) for chunk in chunks]


@given(st.lists(st.integers(0, 400), max_size=900), st.sampled_from([1, 3, 64, 100, 130, 1024]),
       st.lists(st.tuples(st.integers(0, 900), st.sampled_from([1, 3, 64, 100])), max_size=5))
def test_window_keeps_the_chunks_of_the_reference_window_whatever_the_capacities(ids, capacity, changes):
    ids = [str(item) for item in ids]
    capacities = [capacity] * len(ids)
    for at, other in changes:  # a window read back under another configured capacity
        capacities[at:] = [other] * len(capacities[at:])
    window = RecentIds()
    for item, each in zip(ids, capacities):
        window = window.add(item, each)
    expected = _reference_window(ids, capacities)
    assert window.to_wire() == expected
    remembered = {item for chunk in expected for item in chunk}
    for item in set(ids) | {"never"}:
        assert (item in window) == (item in remembered)
    assert RecentIds.from_wire(window.to_wire()) == window


def test_a_full_window_forgets_its_oldest_chunk_of_64_ids_at_a_time():
    window = RecentIds()
    ids = [f"s-{n}" for n in range(2000)]
    for item in ids:
        window = window.add(item, 1024)
    assert window.to_wire() == _reference_window(ids, [1024] * len(ids))
    assert [len(chunk) for chunk in window.to_wire()] == [64] * 16 + [16]
    assert "s-959" not in window and "s-960" in window and "s-1999" in window


@given(st.lists(st.tuples(st.integers(0, 3), st.booleans()), max_size=700), st.sampled_from([1, 3, 64, 100, 1024]))
def test_ids_that_mostly_grow_keep_the_chunks_of_the_reference_window(steps, capacity):
    """Sequence-numbered ids (the common case), with repeats of the newest and some older ones."""
    ids, n = [], 0
    for stride, back in steps:
        n += stride  # stride 0: the newest id again
        ids.append(f"f-{(n - 5 if back and n >= 5 else n):08d}")
    window = RecentIds()
    for item in ids:
        window = window.add(item, capacity)
    assert window.to_wire() == _reference_window(ids, [capacity] * len(ids))


def test_a_window_read_back_with_an_empty_newest_chunk_still_takes_ids():
    window = RecentIds.from_wire([["a", "b"], []]).add("0", 64)
    assert window.to_wire() == [["a", "b"], ["0"]] and "0" in window
