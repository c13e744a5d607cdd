"""faust's current event: what its tables, its changelog partitioning and the
worker's output routing read to know which input is being processed.

faust sets it while its own stream iterates; the worker hands inputs over in
whole batches past faust's streams (`transport.DirectInputConsumer`), so it sets
it itself, through faust's private context variable, for each input in turn.
"""

from __future__ import annotations

import weakref
from contextlib import contextmanager
from typing import Any, Iterator

from faust.streams import _current_event, current_event

__all__ = ["current", "current_event"]


@contextmanager
def current(event: Any) -> Iterator[None]:
    """Make `event` faust's current event (as its own stream iteration does). The
    event must be weakly referable."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)
