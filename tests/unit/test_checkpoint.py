"""The checkpoint of local tables: kept only as far as it vouches, and only once."""

from __future__ import annotations

import asyncio

from streams.faust_compat.checkpoint import StoreEntry
from streams.worker.checkpoint import CHECKPOINT, keep_local_state, write_checkpoint

CHANGELOGS = ["app-exposure-changelog", "app-streak-changelog"]


def stores(tabledir, *names):
    for name in names:
        (tabledir / name).mkdir(parents=True)
        (tabledir / name / "000001.sst").write_bytes(b"x")


def run(tabledir, ends, app_id="app", changelogs=CHANGELOGS):
    async def end_offsets(wanted):
        return {(topic, p): ends.get((topic, p), 0) for topic, partitions in wanted.items() for p in partitions}

    return asyncio.run(keep_local_state(tabledir, app_id, changelogs, end_offsets))


def test_a_clean_checkpoint_keeps_its_stores_removes_the_rest_and_vouches_once(tmp_path):
    tabledir = tmp_path / "tables"
    stores(tabledir, "exposure-0.db", "exposure-1.db", "streak-0.db")
    write_checkpoint(tabledir, "app", [StoreEntry("exposure-0.db", CHANGELOGS[0], 0, 41),
                                       StoreEntry("streak-0.db", CHANGELOGS[1], 0, None)])
    said = run(tabledir, {(CHANGELOGS[0], 0): 43})
    assert "kept" in said
    assert sorted(p.name for p in tabledir.iterdir()) == ["exposure-0.db", "streak-0.db"]
    assert not (tabledir / CHECKPOINT).exists()  # read once: a crash after this start rebuilds
    assert "rebuilt" in run(tabledir, {(CHANGELOGS[0], 0): 43}) and not tabledir.exists()


def test_everything_is_rebuilt_when_the_checkpoint_does_not_hold(tmp_path):
    cases = {
        "missing": (None, {}),
        "another app": ("other", {(CHANGELOGS[0], 0): 43}),
        "changelog behind it (recreated)": ("app", {(CHANGELOGS[0], 0): 41}),
    }
    for case, (app_id, ends) in cases.items():
        tabledir = tmp_path / case / "tables"
        stores(tabledir, "exposure-0.db")
        if app_id:
            write_checkpoint(tabledir, app_id, [StoreEntry("exposure-0.db", CHANGELOGS[0], 0, 41)])
        assert "rebuilt" in run(tabledir, ends), case
        assert not tabledir.exists(), case
    tabledir = tmp_path / "unknown changelog" / "tables"
    stores(tabledir, "gone-0.db")
    write_checkpoint(tabledir, "app", [StoreEntry("gone-0.db", "app-gone-changelog", 0, 3)])
    assert "other changelogs" in run(tabledir, {("app-gone-changelog", 0): 10})
    (tmp_path / "torn").mkdir()
    stores(tmp_path / "torn", "exposure-0.db")
    (tmp_path / "torn" / CHECKPOINT).write_text('{"version": 1, "app_id": "app", "stores": [')
    assert "rebuilt" in run(tmp_path / "torn", {})


def test_a_changelog_deleted_and_recreated_past_the_checkpoint_offset_is_rebuilt(tmp_path):
    # The changelog was deleted and recreated while the worker was away, and written
    # since past the checkpoint's offset (another worker, started on the new one): its
    # end alone cannot tell; the store holds values the new changelog never had.
    tabledir = tmp_path / "tables"
    stores(tabledir, "exposure-0.db")
    write_checkpoint(tabledir, "app", [StoreEntry("exposure-0.db", CHANGELOGS[0], 0, 41)],
                     topic_ids={CHANGELOGS[0]: "old-id", CHANGELOGS[1]: "streak-id"})

    async def end_offsets(wanted):
        return {(topic, p): 500 for topic, partitions in wanted.items() for p in partitions}

    said = asyncio.run(keep_local_state(tabledir, "app", CHANGELOGS, end_offsets,
                                        topic_ids={CHANGELOGS[0]: "new-id", CHANGELOGS[1]: "streak-id"}))
    assert said.startswith("local tables rebuilt from the changelogs") and CHANGELOGS[0] in said, said
    assert not tabledir.exists()
    # the same changelog: kept
    stores(tabledir, "exposure-0.db")
    write_checkpoint(tabledir, "app", [StoreEntry("exposure-0.db", CHANGELOGS[0], 0, 41)],
                     topic_ids={CHANGELOGS[0]: "new-id"})
    said = asyncio.run(keep_local_state(tabledir, "app", CHANGELOGS, end_offsets,
                                        topic_ids={CHANGELOGS[0]: "new-id", CHANGELOGS[1]: "streak-id"}))
    assert "kept" in said, said
    # a checkpoint that does not say which changelog it was written against vouches for nothing
    write_checkpoint(tabledir, "app", [StoreEntry("exposure-0.db", CHANGELOGS[0], 0, 41)])
    said = asyncio.run(keep_local_state(tabledir, "app", CHANGELOGS, end_offsets,
                                        topic_ids={CHANGELOGS[0]: "new-id"}))
    assert "rebuilt" in said, said


def test_topic_ids_are_read_from_a_metadata_answer_leaving_out_errors_and_the_zero_id():
    import uuid

    from streams.kafka.topics import ids_of

    ident = uuid.uuid4()
    assert ids_of([{"error_code": 0, "name": "a", "topic_id": ident},
                   {"error_code": 0, "name": "b", "topic_id": uuid.UUID(int=0)},
                   {"error_code": 3, "name": "c", "topic_id": uuid.uuid4()},
                   {"error_code": 0, "name": "d", "topic_id": str(ident)}]) == {"a": str(ident), "d": str(ident)}
