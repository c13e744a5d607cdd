
from streams.engine import InputPosition
from streams.wire.models import Control, Fill, Instrument, Signal, validate
from streams.processor import MemoryStore, Processor


def processor(config):
    return Processor(config, MemoryStore(config))


def feed(proc, entries):
    """Run builder entries through a Processor; return the decisions of the signals."""
    results = []
    for offset, entry in enumerate(entries):
        topic, value = entry["topic"], entry["value"]
        if topic == "instruments":
            proc.on_instrument(validate(Instrument, value))
        elif topic == "fills":
            proc.on_fill(validate(Fill, value), offset)
        elif topic == "controls":
            proc.on_control(validate(Control, value), offset)
        else:
            results.append(proc.on_signal(validate(Signal, value), InputPosition("signals", 0, offset)))
    return results
