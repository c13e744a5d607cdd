"""`sizer control` says when the workers refused a command (exit 1), rather than
printing the unchanged state with exit 0."""

from __future__ import annotations

import pytest

from streams.ops.control import CommandNotApplied, applied_row


def test_a_command_the_group_committed_past_but_did_not_apply_is_named():
    value = {"command_id": "c-1", "type": "halt", "portfolio_id": "desk-3"}
    applied = {"portfolio_id": "desk-3", "halted": True, "last_control_offset": 7}
    assert applied_row(value, 2, 7, applied) is applied
    assert applied_row(value, 2, 7, {**applied, "last_control_offset": 9}) is not None  # another one applied since
    for last in (None, 6):  # no state at all (not registered), or an earlier command's
        with pytest.raises(CommandNotApplied) as refused:
            applied_row(value, 2, 7, {**applied, "halted": False, "last_control_offset": last})
        assert str(refused.value).startswith("command c-1 (halt of 'desk-3') at controls[2]@7 was not applied: ")
