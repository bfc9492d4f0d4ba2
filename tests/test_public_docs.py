"""Every public name is documented with an example and appears in the README."""

from __future__ import annotations

import inspect
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
