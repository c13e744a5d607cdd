"""Local table state kept across clean restarts under exactly-once: a checkpoint of
the changelog offsets each local store holds, as Kafka Streams keeps its
`.checkpoint`.

Under exactly-once the stores take a batch's writes before its transaction
commits; a crash, or a transaction aborted by a fence, leaves values in them
that the changelog never committed, and recovery from the store's offset never
overwrites them. So local state is trusted only as the checkpoint vouches for it:

- written by the worker's last commit before it stops (`faust_compat.transport`),
  only when every table write of the run is in a committed transaction and no
  commit failed; it lists each assigned partition's store and the offset of the
  last changelog record it holds (`faust_compat.checkpoint.committed_stores`);
- at start (`keep_local_state`) it is read and deleted at once, so that a run that
  does not end cleanly leaves none; the stores it lists are kept, every other
  store is removed, and faust's recovery reads each changelog from the listed
  offset on: only what changed while the worker was away;
- everything is rebuilt from the changelogs when the checkpoint is missing or
  unreadable, names another app or other changelogs, was written against
  another topic of the same name (its Kafka topic id differs: a changelog
  deleted and recreated, however far the new one has been written since), or
  lists an offset the changelog no longer reaches.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Awaitable, Callable, Iterable, Mapping

from streams.faust_compat.checkpoint import StoreEntry

log = logging.getLogger("streams.worker")

CHECKPOINT = ".checkpoint"
# 2: with the changelogs' topic ids (a version 1 checkpoint vouches for nothing)
VERSION = 2


def write_checkpoint(tabledir: Path, app_id: str, entries: Iterable[StoreEntry],
                     topic_ids: Mapping[str, str] | None = None) -> Path:
    """Write the checkpoint of `entries` (atomically: a temporary file renamed), with
    `topic_ids` (changelog -> its Kafka topic id, read when the worker started)."""
    path = tabledir / CHECKPOINT
    body = {"version": VERSION, "app_id": app_id, "topic_ids": dict(topic_ids or {}),
            "stores": [entry._asdict() for entry in entries]}
    temporary = path.with_name(CHECKPOINT + ".tmp")
    temporary.write_text(json.dumps(body, sort_keys=True))
    temporary.replace(path)
    return path


def read_checkpoint(tabledir: Path, app_id: str) -> tuple[list[StoreEntry], dict[str, str]] | None:
    """The checkpoint's stores and the topic ids of the changelogs it was written
    against, or None when it is missing, unreadable or another app's. The file is
    removed: it vouches for one start only."""
    path = tabledir / CHECKPOINT
    try:
        body = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    finally:
        path.unlink(missing_ok=True)
    try:
        if body["version"] != VERSION or body["app_id"] != app_id:
            return None
        stores = [StoreEntry(str(s["directory"]), str(s["topic"]), int(s["partition"]),
                             None if s["offset"] is None else int(s["offset"])) for s in body["stores"]]
        return stores, {str(topic): str(ident) for topic, ident in body["topic_ids"].items()}
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


Ends = Callable[[Mapping[str, list[int]]], Awaitable[Mapping[tuple[str, int], int]]]


async def keep_local_state(tabledir: Path, app_id: str, changelogs: Iterable[str], ends: Ends,
                           topic_ids: Mapping[str, str] | None = None) -> str:
    """Keep what the checkpoint vouches for and remove the rest (see the module);
    `ends({topic: [partition, ...]})` gives each changelog partition's end offset,
    `topic_ids` each changelog's Kafka topic id now. Returns what was done, for the
    start-up line."""
    if not tabledir.exists():
        return "no local tables"
    read = read_checkpoint(tabledir, app_id)
    entries, written_against = read if read is not None else (None, {})
    reason = None
    other = sorted({entry.topic for entry in entries or ()
                    if (topic_ids or {}).get(entry.topic) != written_against.get(entry.topic)})
    if entries is None:
        reason = "no clean checkpoint"
    elif any(entry.topic not in set(changelogs) for entry in entries):
        reason = "the checkpoint names other changelogs"
    elif other:
        reason = (f"{other[0]} is not the topic the checkpoint was written against: its topic id differs "
                  f"(deleted and recreated)")
    else:
        wanted: dict[str, list[int]] = {}
        for entry in entries:
            wanted.setdefault(entry.topic, []).append(entry.partition)
        end = await ends(wanted)
        behind = [entry for entry in entries
                  if entry.offset is not None and end.get((entry.topic, entry.partition), 0) <= entry.offset]
        if behind:
            first = behind[0]
            reason = (f"{first.topic}[{first.partition}] ends before the checkpoint's offset {first.offset} "
                      f"(recreated?)")
    if reason is not None:
        shutil.rmtree(tabledir)
        return f"local tables rebuilt from the changelogs ({reason})"
    kept = {entry.directory for entry in entries or ()}
    removed = 0
    for child in tabledir.iterdir():
        if child.name not in kept:
            shutil.rmtree(child) if child.is_dir() else child.unlink()
            removed += 1
    return (f"local tables kept from the checkpoint ({len(kept)} stores; {removed} others removed), "
            f"read from the changelogs from there on")
