"""``hf-verifix env``: library versions and Hub settings for a bug report; tokens are never printed."""

from __future__ import annotations

import argparse
import json
import os
import platform
from typing import Any

from .._version import __version__
from ..hub import resolve_endpoint, scrub_secrets
from ..utils.versions import package_version
from ._options import add_command

__all__ = ["add_parser", "environment_report", "run"]

_PACKAGES = (
    "torch",
    "torchvision",
    "timm",
    "transformers",
    "accelerate",
    "datasets",
    "evaluate",
    "huggingface_hub",
    "safetensors",
    "numpy",
    "matplotlib",
)
_SETTINGS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HOME", "HF_HUB_CACHE", "WORLD_SIZE")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """The ``env`` parser has one option, ``--json``.

    Example:
        >>> add_parser(argparse.ArgumentParser().add_subparsers()).parse_args([]).json
        False
    """
    env = add_command(
        subparsers,
        "env",
        "print versions and settings for bug reports (no secrets)",
        "Print library versions and Hub settings for a bug report. Tokens are never printed.",
    )
    env.add_argument("--json", action="store_true", help="print as JSON")
    env.set_defaults(handler=run)
    return env


def _version(package: str) -> str:
    return package_version(package) or "not installed"


def _cuda() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return f"{torch.version.cuda} ({torch.cuda.device_count()} device(s))"
        return "not available"
    except Exception as err:  # a broken torch install is exactly what a bug report needs to show
        return f"unknown ({type(err).__name__})"


def _hub_token() -> str:
    if os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN"):
        return "set (environment)"
    try:
        from huggingface_hub import get_token

        return "set (stored login)" if get_token() else "not set"
    except Exception:
        return "unknown"


def environment_report() -> dict[str, str]:
    """Versions and Hub settings for a bug report; a token is reported as set or not, never shown.

    Example:
        >>> "huggingface_hub" in environment_report()
        True
    """
    report = {"hf_verifix": __version__, "python": platform.python_version(), "platform": platform.platform()}
    report.update({package: _version(package) for package in _PACKAGES})
    report["cuda"] = _cuda()
    report["HF_ENDPOINT"] = resolve_endpoint()
    report.update({name: os.environ.get(name, "unset") for name in _SETTINGS})
    report["hub token"] = _hub_token()
    return {key: scrub_secrets(value) for key, value in report.items()}


def run(args: argparse.Namespace) -> int:
    """Run ``hf-verifix env``: print :func:`environment_report` (as JSON with ``--json``); return 0.

    Example:
        >>> run(argparse.Namespace(json=True))  # doctest: +ELLIPSIS
        {
          "hf_verifix": ...
        }
        0
    """
    report = environment_report()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        width = max(map(len, report))
        for key, value in report.items():
            print(f"{key + ':':<{width + 1}} {value}")
    return 0
