"""``hf-verifix push``: upload a folder written by ``correct`` to a Hub model repo in one commit
(:func:`~hf_verifix.hub.push_folder`), e.g. to retry a push that failed."""

from __future__ import annotations

import argparse
from typing import Any

from ..hub import is_repo_id, push_folder
from ._common import UsageError, say
from ._options import add_command

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """``push FOLDER --repo REPO`` with ``--overwrite``, ``--private`` and ``--commit-message``.

    Example:
        >>> add_parser(argparse.ArgumentParser().add_subparsers()).parse_args(["out", "--repo", "me/m"]).folder
        'out'
    """
    push = add_command(
        subparsers,
        "push",
        "push an output folder to a Hub model repo",
        "Upload a folder written by `correct` to a Hub model repo in one commit.",
        "example:\n  hf-verifix push out/ --repo me/resnet18-sap --private",
    )
    push.add_argument("folder", help="folder written by `hf-verifix correct`")
    push.add_argument("--repo", required=True, help="model repo ID (namespace/name)")
    push.add_argument("--overwrite", action="store_true", help="replace a model or card already on the repo")
    push.add_argument("--private", action="store_true", help="create the repo private")
    push.add_argument("--commit-message", help="commit message")
    push.set_defaults(handler=run)
    return push


def run(args: argparse.Namespace) -> int:
    """Run ``hf-verifix push``: upload ``folder`` to ``--repo``; return 0.

    Example:
        >>> run(argparse.Namespace(folder="out", repo="not a repo"))  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        UsageError: --repo expects a repo ID such as me/model-sap, got 'not a repo'
    """
    if not is_repo_id(args.repo):
        raise UsageError(f"--repo expects a repo ID such as me/model-sap, got {args.repo!r}")
    url = push_folder(
        args.folder,
        args.repo,
        overwrite=args.overwrite,
        private=True if args.private else None,
        commit_message=args.commit_message,
    )
    say(f"pushed {args.folder} to {args.repo}: {url}")
    return 0
