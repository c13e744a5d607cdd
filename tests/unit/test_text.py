"""Counts in what the commands print."""

from streams.text import counted


def test_one_is_singular_and_every_other_count_plural():
    assert [counted(n, "partition") for n in (0, 1, 6)] == ["0 partitions", "1 partition", "6 partitions"]


def test_an_irregular_plural_and_a_number_format_are_taken_as_given():
    assert counted(1, "process", "processes") == "1 process"
    assert counted(2, "process", "processes") == "2 processes"
    assert counted(4000, "signal", spec=",") == "4,000 signals"
