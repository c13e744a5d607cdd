"""Every private name of faust-streaming and aiokafka that `streams.faust_compat`
relies on exists at the pinned versions; a moved one fails loudly, by name."""

from importlib.metadata import version

import pytest

from streams import faust_compat


def test_the_pinned_versions_are_installed():
    assert {name: version(name) for name in faust_compat.SUPPORTED} == faust_compat.SUPPORTED


@pytest.mark.parametrize(("module", "path"), faust_compat.PRIVATE_NAMES,
                         ids=[f"{m}.{p}" for m, p in faust_compat.PRIVATE_NAMES])
def test_each_private_name_exists(module, path):
    assert faust_compat._resolve(module, path), f"{module}.{path} moved: streams.faust_compat must be updated"


def test_a_moved_name_stops_start_up_naming_it(monkeypatch):
    monkeypatch.setattr(faust_compat, "PRIVATE_NAMES", (*faust_compat.PRIVATE_NAMES,
                                                        ("faust.transport.consumer", "Consumer._drain_everything")))
    with pytest.raises(faust_compat.IncompatibleLibrary, match=r"faust\.transport\.consumer\.Consumer\._drain_everything"):
        faust_compat.check()


def test_nothing_outside_faust_compat_imports_a_private_name_of_faust_or_aiokafka():
    import pathlib
    import re

    root = pathlib.Path(faust_compat.__file__).resolve().parents[1]
    private = re.compile(r"from (faust|aiokafka)[\w.]* import [^\n]*\b_[a-z]")
    offenders = [str(path.relative_to(root)) for path in root.rglob("*.py")
                 if "faust_compat" not in path.parts and private.search(path.read_text())]
    assert offenders == []
