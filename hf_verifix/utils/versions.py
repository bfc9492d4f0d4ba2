"""The installed versions of hf_verifix and of the libraries it works with, for saved records and bug reports."""

from __future__ import annotations

import importlib.metadata

from .._version import __version__

__all__ = ["RECORDED_PACKAGES", "package_version", "package_versions"]

RECORDED_PACKAGES = ("torch", "timm", "transformers", "datasets", "accelerate", "huggingface_hub", "safetensors")
"""The libraries whose versions a saved correction records (those installed)."""


def package_version(package: str) -> str | None:
    """The installed version of ``package`` (a distribution name), or None when it is not installed.

    Example:
        >>> package_version("torch") is not None, package_version("no-such-package-xyz")
        (True, None)
    """
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def package_versions(packages: tuple[str, ...] = RECORDED_PACKAGES) -> dict[str, str]:
    """hf_verifix's version and those of the installed ``packages``, by name.

    Example:
        >>> versions = package_versions(("torch",))
        >>> sorted(versions)
        ['hf_verifix', 'torch']
    """
    versions = {"hf_verifix": __version__}
    for package in packages:
        version = package_version(package)
        if version is not None:
            versions[package] = version
    return versions
