"""What the subcommands share on the command line: option types, option groups, and the flag of each API argument.

Library messages name API arguments and functions (``overwrite=True``, ``label_column=``, ``align_labels()``);
:func:`to_flags` shows them as the flags (or command) that stand for them on the command line, through the one
mapping :data:`API_FLAGS`, and :func:`with_flag` puts the flag before a configuration message.

Example:
    >>> to_flags("pass overwrite=True to replace them")
    'pass --overwrite to replace them'
"""

from __future__ import annotations

import argparse
import json
import re
from typing import Any

__all__ = [
    "API_FLAGS",
    "PROG",
    "add_command",
    "add_data_options",
    "add_model_options",
    "add_selection_options",
    "alpha_list",
    "json_object",
    "positive_float",
    "positive_int",
    "to_flags",
    "with_flag",
]

PROG = "hf-verifix"

# The API argument (a CorrectionConfig field, or an argument of load_model / load_data / save_corrected /
# push_folder) or function each flag or command stands for, so that the library's messages name the flag instead.
API_FLAGS = {
    "alpha": "--alpha",
    "alpha_grid": "--alphas",
    "solver": "--solver",
    "gram_precision": "--gram-precision",
    "max_rows_per_layer": "--max-rows-per-layer",
    "n_trusted": "--n-trusted",
    "selector": "--selector",
    "selector_kwargs": "--selector-kwargs",
    "target_modules": "--target-modules",
    "exclude_modules": "--exclude-modules",
    "batch_size": "--batch-size",
    "seed": "--seed",
    "image_column": "--image-column",
    "label_column": "--label-column",
    "noisy_labels": "--noisy-labels",
    "split": "--split",
    "limit": "--limit",
    "align_labels": "--align-labels",
    "trust_remote_code": "--trust-remote-code",
    "overwrite": "--overwrite",
    "architecture": "--architecture",
    "cache_dir": "--cache-dir",
    "on_uncorrectable": "--on-uncorrectable",
    "write_trusted": "`hf-verifix select --output FILE`",
}

# An argument named as a thing to pass or drop: `name=True`, `name()` or a bare `name=` (not `name=3`: a value the
# message reports stays as written).
_MENTION = re.compile(r"(?<![\w.-])(\w+)(?:=True\b|\(\)|='([\w.-]*)'|=(?=[\s),;:]|$))")


def to_flags(message: str) -> str:
    """``message`` with each API argument or function it names as a thing to pass or call (``overwrite=True``,
    ``label_column=``, ``align_labels()``) replaced by its flag; a message that already names a flag (written for
    both audiences, e.g. ``--overwrite (overwrite=True)``) is left as written, and so is a reported value
    (``n_trusted=50``).

    Example:
        >>> to_flags("drop align_labels(), or pass the column (label_column=)")
        'drop --align-labels, or pass the column (--label-column)'
        >>> to_flags("name its timm architecture (architecture='resnet18')")
        'name its timm architecture (--architecture resnet18)'
        >>> to_flags("pass --overwrite (overwrite=True) to replace them; n_trusted=50 is too large")
        'pass --overwrite (overwrite=True) to replace them; n_trusted=50 is too large'
    """
    if any(flag in message for flag in API_FLAGS.values()):
        return message
    return _MENTION.sub(_flag_of, message)


def _flag_of(mention: re.Match[str]) -> str:
    flag = API_FLAGS.get(mention[1])
    if flag is None:
        return mention[0]
    return f"{flag} {mention[2]}" if mention[2] is not None else flag


def with_flag(message: str) -> str:
    """A configuration message (which starts with the field it rejects) prefixed by that field's flag.

    Example:
        >>> with_flag("seed must be an integer in [0, 2**64 - 1] (e.g. 0), got -1")
        '--seed: seed must be an integer in [0, 2**64 - 1] (e.g. 0), got -1'
    """
    field = re.match(r"(?:every )?(\w+)", message)
    flag = API_FLAGS.get(field[1] if field else "")
    return f"{flag}: {message}" if flag else message


# ---------------------------------------------------------------------------------------------------- option types
def alpha_list(text: str) -> list[float]:
    """Comma- (or space-) separated α values, each finite and > 0.

    Example:
        >>> alpha_list("1e3,3e4")
        [1000.0, 30000.0]
    """
    try:
        values = [float(part) for part in text.replace(" ", ",").split(",") if part]
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"expected numbers separated by commas such as 1e3,3e4,1e6, got {text!r}"
        ) from err
    if not values or any(not (v > 0 and v < float("inf")) for v in values):
        raise argparse.ArgumentTypeError(f"every α must be a finite number > 0, got {text!r}")
    return values


def positive_float(text: str) -> float:
    """One finite number > 0.

    Example:
        >>> positive_float("3e4")
        30000.0
    """
    value = alpha_list(text)
    if len(value) != 1:
        raise argparse.ArgumentTypeError(f"expected one number such as 3e4, got {text!r}")
    return value[0]


def positive_int(text: str) -> int:
    """An integer >= 1.

    Example:
        >>> positive_int("64")
        64
    """
    try:
        value = int(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from err
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def json_object(text: str) -> dict[str, Any]:
    """A JSON object (keyword arguments).

    Example:
        >>> json_object('{"n": 10}')
        {'n': 10}
    """
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as err:  # RecursionError: nested too deeply to parse
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"n\": 10}}', got {text[:80]!r}") from err
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"n\": 10}}', got {text!r}")
    return value


# ---------------------------------------------------------------------------------------------------- parsers
def add_command(
    subparsers: Any, name: str, summary: str, description: str, epilog: str | None = None
) -> argparse.ArgumentParser:
    """Add the subcommand ``name`` (``summary`` in the command list, ``description`` atop its help); an ``epilog``
    of examples is shown as written.

    Example:
        >>> command = add_command(argparse.ArgumentParser(prog=PROG).add_subparsers(), "env", "print versions", "...")
        >>> command.prog
        'hf-verifix env'
    """
    formatter = argparse.RawDescriptionHelpFormatter if epilog else argparse.HelpFormatter
    return subparsers.add_parser(name, help=summary, description=description, epilog=epilog, formatter_class=formatter)


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """Add the ``model`` group: ``--model`` and how to load it.

    Example:
        >>> parser = argparse.ArgumentParser()
        >>> add_model_options(parser)
        >>> parser.parse_args(["--model", "org/vit"]).trust_remote_code
        False
    """
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model",
        required=True,
        help="Hub ID (org/name, timm/name, hf-hub:org/name[@rev]), model folder or weights file",
    )
    group.add_argument("--revision", help="branch, tag or commit of a Hub model")
    group.add_argument("--architecture", help="timm model name of a bare weights file (e.g. resnet18)")
    group.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="run Python code shipped in the model repo (off by default; only for repos you trust)",
    )
    group.add_argument("--cache-dir", help="Hugging Face cache folder (default: HF_HUB_CACHE / HF_HOME)")
    group.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    group.add_argument(
        "--input-size",
        type=positive_int,
        metavar="PIXELS",
        help="timm models: the square input size the model was trained at, when its saved data config says "
        "otherwise (e.g. 32 for a CIFAR model saved with ImageNet's 224); written into the corrected model's config",
    )


def _add_noisy_label_options(group: Any) -> None:
    labels = group.add_mutually_exclusive_group()
    labels.add_argument(
        "--noisy-labels",
        metavar="FILE",
        help="the labels the model was trained with, one per row of --split (.txt one per line, .npy, .json)",
    )
    labels.add_argument("--noisy-label-column", metavar="COLUMN", help="the training labels, as a column")


def add_data_options(parser: argparse.ArgumentParser, split_default: str, noisy: bool) -> Any:
    """Add the ``data`` group (``--dataset``, ``--split``, columns, batches, seed), with the training-label options
    when ``noisy``; return the group so a subcommand can add its own data options.

    Example:
        >>> group = add_data_options(parser := argparse.ArgumentParser(), "test", noisy=False)
        >>> group.title, parser.parse_args(["--dataset", "data/images"]).split
        ('data', 'test')
    """
    group = parser.add_argument_group("data")
    group.add_argument(
        "--dataset", required=True, help="Hub dataset ID, save_to_disk folder, image folder or .parquet/.csv file"
    )
    group.add_argument(
        "--split", default=split_default, help=f"split, optionally sliced: 'train[:80%%]' (default: {split_default})"
    )
    group.add_argument("--image-column", help="image column (default: detected)")
    group.add_argument("--label-column", help="label column (default: detected)")
    align = "renumber the label column's ClassLabel classes to the model's (matched by name, case-insensitive)"
    group.add_argument("--align-labels", action="store_true", help=align)
    if noisy:
        _add_noisy_label_options(group)
    group.add_argument("--dataset-revision", help="branch, tag or commit of a Hub dataset (recorded in the card)")
    group.add_argument("--dataset-cache-dir", help="datasets cache folder (default: HF_DATASETS_CACHE)")
    group.add_argument("--limit", type=positive_int, help="use at most N rows of each split (a seeded random subset)")
    group.add_argument("--batch-size", type=positive_int, default=64, help="batch size of every pass (default: 64)")
    group.add_argument("--seed", type=int, default=0, help="seed of every random choice (default: 0)")
    group.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return group


def add_selection_options(parser: argparse.ArgumentParser) -> Any:
    """Add the ``trusted set`` group (selector, its keyword arguments, size, per class); return the group.

    Example:
        >>> [action.dest for action in add_selection_options(argparse.ArgumentParser())._group_actions]
        ['selector', 'selector_kwargs', 'n_trusted', 'per_class']
    """
    group = parser.add_argument_group("trusted set")
    group.add_argument(
        "--selector", default="loss", help="trusted-sample selector (default: loss; see hf_verifix.list_selectors())"
    )
    group.add_argument("--selector-kwargs", type=json_object, help="JSON keyword arguments of the selector")
    group.add_argument("--n-trusted", type=positive_int, default=1000, help="size of the trusted set (default: 1000)")
    group.add_argument("--per-class", action="store_true", help="take n_trusted / K samples from each class")
    return group
