"""``hf-verifix select``: write the trusted samples a selector picks, with their scores and labels (JSON or CSV).

The file is :func:`~hf_verifix.data.labels.write_trusted`'s; ``hf-verifix correct --trusted FILE`` reads it back
(after you review it) with :func:`~hf_verifix.data.labels.read_trusted`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..data.labels import TRUSTED_SUFFIXES, write_trusted
from ..errors import DataError
from ..selection import get_selector
from ..utils.distributed import is_main_process
from ._common import (
    UsageError,
    check_device,
    check_output_file,
    check_selector_kwargs,
    load_labelled_split,
    load_model_of,
    run_quietly,
    say,
    source_of,
)
from ._options import add_command, add_data_options, add_model_options, add_selection_options

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``select``, whose ``--output`` (.json or .csv) is required, with the trusted-set options.

    Example:
        >>> options = ["--model", "m", "--dataset", "d", "--output", "t.csv"]
        >>> vars(add_parser(argparse.ArgumentParser().add_subparsers()).parse_args(options))["n_trusted"]
        1000
    """
    select = add_command(
        subparsers,
        "select",
        "write the trusted samples a selector picks, with their scores",
        "Select trusted samples and write their row indices, scores and labels (JSON or CSV).",
        "example:\n  hf-verifix select --model runs/resnet18 --dataset data/images --per-class --n-trusted 500 "
        "--output trusted.csv\n  hf-verifix correct ... --trusted trusted.csv   # after reviewing them",
    )
    add_model_options(select)
    add_data_options(select, "train", noisy=True)
    add_selection_options(select)
    select.add_argument("--output", metavar="FILE", required=True, help="output file: .json or .csv")
    select.set_defaults(handler=run)
    return select


def _check_options(args: argparse.Namespace) -> Path:
    """Refuse bad options before anything is loaded; return the output path."""
    check_selector_kwargs(args.selector, args.selector_kwargs)
    check_device(args.device)
    output = Path(args.output)
    if output.suffix not in TRUSTED_SUFFIXES:
        raise UsageError(f"--output must end in .json or .csv, got {args.output!r}")
    check_output_file(output, "trusted.json")
    return output


def run(args: argparse.Namespace) -> int:
    """Run ``hf-verifix select``: write the trusted row indices, scores and labels to ``--output``; return 0.

    Example:
        >>> run(argparse.Namespace(selector="loss", selector_kwargs=None, device=None, output="trusted.txt"))
        Traceback (most recent call last):
        hf_verifix.commands._common.UsageError: --output must end in .json or .csv, got 'trusted.txt'
    """
    output = _check_options(args)
    loaded = load_model_of(args)
    data = load_labelled_split(loaded, args, args.split, training=True)
    if args.n_trusted > data.num_rows:
        raise DataError(f"--n-trusted {args.n_trusted} is larger than the data ({data.num_rows} rows); lower it")
    selector = get_selector(args.selector, **(args.selector_kwargs or {}))
    source = source_of(loaded, data, args.batch_size)
    selection = run_quietly(
        selector.select, loaded.model, source, args.n_trusted, args.per_class, args.seed, not args.no_progress
    )
    if not is_main_process():
        return 0
    chosen = [int(i) for i in selection.indices.tolist()]
    metadata = {
        "model": args.model,
        "dataset": args.dataset,
        "split": args.split,
        "label_column": data.label_column,
        "selector": args.selector,
        "selector_kwargs": args.selector_kwargs,
        "n_trusted": args.n_trusted,
        "per_class": args.per_class,
        "seed": args.seed,
    }
    rows = [data.rows[i] for i in chosen]
    scores = [float(selection.scores[i]) for i in chosen]
    write_trusted(output, rows, scores, [int(selection.labels[i]) for i in chosen], metadata)
    say(f"wrote {len(rows)} trusted row indices ({args.selector}, lower score = more trusted) to {output}")
    return 0
