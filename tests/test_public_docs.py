"""Every public name is documented with an example and appears in the README."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

import hf_verifix

README = Path(__file__).resolve().parents[1] / "README.md"


def test_all_is_sorted_and_importable():
    assert list(hf_verifix.__all__) == sorted(hf_verifix.__all__)
    for name in hf_verifix.__all__:
        assert hasattr(hf_verifix, name), name


@pytest.mark.parametrize("name", hf_verifix.__all__)
def test_public_name_has_a_docstring_with_an_example(name):
    doc = inspect.getdoc(getattr(hf_verifix, name)) or ""
    assert doc.strip(), f"{name} has no docstring"
    assert "Example" in doc and ">>>" in doc, f"{name}'s docstring has no 'Example:' section with >>> lines"


def module_public_callables() -> list[str]:
    """``module.name`` (and ``module.Class.method``) of every function and class in a submodule's ``__all__``."""
    found = []
    for info in pkgutil.walk_packages(hf_verifix.__path__, "hf_verifix."):
        module = importlib.import_module(info.name)
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name)
            if not (inspect.isclass(obj) or inspect.isfunction(obj)) or obj.__module__ != info.name:
                continue  # constants and type aliases; re-exports are checked where they are defined
            found.append(f"{info.name}:{name}")
            if inspect.isclass(obj):
                methods = [k for k, v in vars(obj).items() if not k.startswith("_") and inspect.isfunction(v)]
                found += [f"{info.name}:{name}.{k}" for k in methods]
    return found


@pytest.mark.parametrize("path", module_public_callables())
def test_every_public_function_class_and_method_of_every_module_has_an_example(path):
    module, qualname = path.split(":")
    obj: object = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    doc = inspect.getdoc(obj) or ""
    assert ">>>" in doc, f"{module}.{qualname} has no docstring example"


@pytest.mark.parametrize("name", hf_verifix.__all__)
def test_public_name_is_mentioned_in_the_readme(name):
    text = README.read_text(encoding="utf-8")
    assert re.search(rf"\b{re.escape(name)}\b", text), f"{name} is public but the README never mentions it"


def test_import_does_not_load_evaluate_until_accuracy_is_asked_for():
    # `evaluate` takes seconds to import (it pulls in transformers' pipelines); every CLI call and child process pays
    # hf_verifix's import time, so `evaluate` is only imported by what needs it.
    import subprocess
    import sys

    code = (
        "import sys, hf_verifix; before = 'evaluate' in sys.modules; "
        "metric = hf_verifix.Accuracy(); print(before, 'evaluate' in sys.modules, type(metric).__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True", "Accuracy"]
    with pytest.raises(AttributeError, match="no attribute 'Acuracy'"):
        hf_verifix.Acuracy  # noqa: B018
