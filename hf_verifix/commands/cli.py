"""The ``hf-verifix`` command line: ``correct``, ``evaluate``, ``select``, ``push`` and ``env``.

A thin layer over the library: each subcommand's module (:mod:`~hf_verifix.commands.correct` ...) adds its parser and
runs it. Exit codes: 0 success, 1 a failure while running (the message says what to do), 2 a usage error, 130
interrupted. Library messages name API arguments (``overwrite=True``); they are shown with the flags that set them
(``--overwrite``). Under ``accelerate launch`` / ``torchrun`` every process computes its share and only the main
process writes, prints and pushes.

Example:
    >>> main(["env"]) == 0  # doctest: +ELLIPSIS
    hf_verifix: ...
    True
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence

from ..errors import ConfigError, VerifixError
from ..hub import scrub_secrets
from ..utils.progress import disable_ecosystem_progress_bars
from ..utils.staging import terminate_as_exit
from . import correct, env, evaluate, push, select
from ._common import UsageError
from ._options import PROG, to_flags

__all__ = ["build_parser", "main"]

EPILOG = """\
examples:
  # correct a Hub model on a Hub dataset, choosing α on the validation split, and push model + card
  hf-verifix correct --model org/vit-noisy --dataset org/noisy-images --split train \\
      --eval-split validation --per-class --recalibrate-batchnorm \\
      --output-dir vit-sap --push-to-hub me/vit-sap

  # a local timm model folder, an image folder, training labels from a file
  hf-verifix correct --model runs/resnet18 --dataset data/images --noisy-labels noisy.txt \\
      --split "train[:80%]" --eval-split "train[80%:]" --alphas 1e4,3e4,1e5 --output-dir out/

  hf-verifix evaluate --model out/ --dataset data/images --split test
  hf-verifix select --model runs/resnet18 --dataset data/images --n-trusted 500 --output trusted.csv
  hf-verifix push out/ --repo me/resnet18-sap
  hf-verifix env            # versions for bug reports (never prints tokens)

exit codes: 0 ok, 1 failed while running (see the message), 2 usage error, 130 interrupted.
Hub access: HF_ENDPOINT, HF_TOKEN (or `hf auth login`), HF_HUB_OFFLINE=1 to use the local cache only."""

SUBCOMMANDS = (correct, evaluate, select, push, env)


def build_parser() -> argparse.ArgumentParser:
    """Return the ``hf-verifix`` argument parser (subcommands correct, evaluate, select, push, env).

    Example:
        >>> build_parser().parse_args(["push", "out", "--repo", "me/model"]).repo
        'me/model'
    """
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Repair image classifiers trained on noisy labels by Scaled Activation Projection (SAP, Verifix).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="print the traceback of a failure")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in SUBCOMMANDS:
        command.add_parser(subparsers)
    return parser


def _error(command: str, message: str) -> None:
    print(f"{PROG} {command}: error: {scrub_secrets(to_flags(message))}", file=sys.stderr, flush=True)


def _run(args: argparse.Namespace) -> int:
    """Run the chosen subcommand; map its failure to an exit code and a message naming flags."""
    try:
        with terminate_as_exit():  # SIGTERM unwinds like Ctrl-C (temporary folders removed), exit status 143
            return int(args.handler(args))
    except (UsageError, ConfigError) as err:  # a bad option, or a value the configuration rejects
        _error(args.command, str(err))
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr, flush=True)
        return 130
    except Exception as err:
        known = isinstance(err, (VerifixError, OSError))
        _error(args.command, str(err) if known else f"{type(err).__name__}: {err}")
        if args.debug:
            print(scrub_secrets("".join(traceback.format_exception(err))), file=sys.stderr, flush=True)
        elif not known:
            print(f"{PROG}: run with --debug for the traceback", file=sys.stderr, flush=True)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``hf-verifix`` with ``argv`` (default: ``sys.argv[1:]``); return the exit code instead of exiting.

    Exit codes: 0 success; 1 a failure while running (the message on stderr says what to do; ``--debug`` adds the
    traceback); 2 a usage error (including option values the configuration rejects); 130 interrupted.

    Example:
        >>> main(["push", "out", "--repo", "not a repo"])
        2
    """
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as exit:  # --help (0) or a usage error (2): argparse already printed why
        return exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 2)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    if getattr(args, "no_progress", False):
        disable_ecosystem_progress_bars()  # the Hub's, datasets' and transformers' bars too
    return _run(args)


if __name__ == "__main__":
    sys.exit(main())
