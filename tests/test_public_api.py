"""The public API is what `__all__` says: no more, no less, all of it typed, small enough to hold
in one's head, and cheap to import."""

import importlib
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import anabranch

SUBPACKAGES = [
    "anabranch.analysis",
    "anabranch.chat",
    "anabranch.testing",
    "anabranch.graphs.cluster",  # Ray
    "anabranch.llm.local_server",  # the embedded server
]


def test_all_lists_exactly_the_public_names():
    assert set(anabranch.__all__) == set(anabranch._WHERE)
    assert len(anabranch.__all__) == len(set(anabranch.__all__))
    assert len(anabranch.__all__) <= 30
    for name in anabranch.__all__:
        assert getattr(anabranch, name) is getattr(
            importlib.import_module(anabranch._WHERE[name]), name
        )
    with pytest.raises(AttributeError):
        _ = anabranch.NoSuchName  # type: ignore[attr-defined]


@pytest.mark.parametrize("package", ["anabranch", *SUBPACKAGES])
def test_every_public_name_says_what_it_is(package):
    module = importlib.import_module(package)
    missing = [
        name
        for name in module.__all__
        if (inspect.isclass(v := getattr(module, name)) or inspect.isfunction(v))
        and not inspect.getdoc(v)
    ]
    assert not missing


def test_import_anabranch_defers_the_heavy_parts():
    # A fresh interpreter: what `import anabranch` alone loads.
    code = "import sys, anabranch; print(' '.join(sorted(sys.modules)))"
    loaded = set(subprocess.check_output([sys.executable, "-c", code], text=True).split())
    assert not loaded & {"langgraph", "openai", "ray", "tiktoken", "httpx2", "pydantic"}


def test_the_package_is_marked_typed():
    assert (Path(anabranch.__file__).parent / "py.typed").is_file()
