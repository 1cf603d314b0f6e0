"""The public API is what `__all__` says: no more, no less, and all of it typed."""

import inspect
import types
from pathlib import Path

import anabranch


def test_all_lists_exactly_the_public_names():
    public = {
        name
        for name, value in vars(anabranch).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert set(anabranch.__all__) - {"__version__"} == public
    assert len(anabranch.__all__) == len(set(anabranch.__all__))


def test_every_public_name_says_what_it_is():
    missing = [
        name
        for name in anabranch.__all__
        if (inspect.isclass(v := getattr(anabranch, name)) or inspect.isfunction(v))
        and not inspect.getdoc(v)
    ]
    assert not missing


def test_the_package_is_marked_typed():
    assert (Path(anabranch.__file__).parent / "py.typed").is_file()
