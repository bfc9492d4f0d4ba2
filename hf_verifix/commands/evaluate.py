"""``hf-verifix evaluate``: print a model's accuracy (JSON) on a split of a dataset, with
:func:`~hf_verifix.metrics.source_accuracy`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..utils.distributed import is_main_process
from ..utils.staging import atomic_write
from ._common import check_device, check_output_file, load_labelled_split, load_model_of, source_of
from ._options import add_command, add_data_options, add_model_options

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """``evaluate`` reads the model and data options (``--split`` defaults to ``test``) and ``--output FILE``.

    Example:
        >>> add_parser(argparse.ArgumentParser().add_subparsers()).parse_args(["--model", "m", "--dataset", "d"]).split
        'test'
    """
    example = "example:\n  hf-verifix evaluate --model out/ --dataset data/images --split test --output scores.json"
    evaluate = add_command(
        subparsers,
        "evaluate",
        "print a model's accuracy on a split",
        "Print a model's accuracy (JSON) on a split of a dataset.",
        example,
    )
    add_model_options(evaluate)
    add_data_options(evaluate, "test", noisy=False)
    evaluate.add_argument("--output", metavar="FILE", help="also write the result as JSON to FILE")
    evaluate.set_defaults(handler=run)
    return evaluate


def run(args: argparse.Namespace) -> int:
    """Run ``hf-verifix evaluate``: print the accuracy as JSON (and write it to ``--output``); return 0.

    Example:
        >>> run(argparse.Namespace(device="tpu"))  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        UsageError: --device 'tpu' is not a torch device (...); available devices: cpu ...
    """
    from ..metrics import source_accuracy  # imports `evaluate` (seconds): only when this command runs

    check_device(args.device)
    if args.output:
        check_output_file(Path(args.output), "scores.json")
    loaded = load_model_of(args)
    data = load_labelled_split(loaded, args, args.split, training=False)
    accuracy = source_accuracy(loaded.model, source_of(loaded, data, args.batch_size), not args.no_progress)
    result = {
        "model": args.model,
        "dataset": args.dataset,
        "split": args.split,
        "label_column": data.label_column,
        "samples": data.num_rows,
        "accuracy": accuracy,
    }
    if is_main_process():
        text = json.dumps(result, indent=2)
        if args.output:
            atomic_write(args.output, text + "\n")
        print(text, flush=True)
    return 0
