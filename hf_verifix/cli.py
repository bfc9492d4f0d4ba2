"""The ``hf-verifix`` command line: ``correct``, ``evaluate``, ``select``, ``push`` and ``env``.

A thin layer over the library: :mod:`hf_verifix.hub` loads the model and data, :class:`~hf_verifix.ProjectionCorrector`
corrects, :func:`~hf_verifix.hub.save_corrected` writes the model and card, :func:`~hf_verifix.hub.push_folder`
pushes. Exit codes: 0 success, 1 a failure while running (the message says what to do), 2 a usage error, 130
interrupted. Under ``accelerate launch`` / ``torchrun`` every process computes its share and only the main process
writes, prints and pushes.

Example:
    >>> main(["env"]) == 0  # doctest: +ELLIPSIS
    hf_verifix: ...
    True
"""

from __future__ import annotations

import argparse
import csv
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shlex
import sys
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .results import format_alpha

__all__ = ["build_parser", "environment_report", "main"]

PROG = "hf-verifix"
_PACKAGE_DIR = Path(__file__).resolve().parent

_EPILOG_MAIN = """\
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

_EPILOG_CORRECT = """\
examples:
  hf-verifix correct --model org/vit-noisy --dataset org/noisy-images --eval-split validation \\
      --output-dir vit-sap --push-to-hub me/vit-sap
  hf-verifix correct --model hf-hub:timm/resnet18.a1_in1k --dataset data/images --split "train[:80%]" \\
      --eval-split "train[80%:]" --noisy-labels noisy.npy --per-class --n-trusted 500 --output-dir out/
  hf-verifix correct --model ckpt.pth --architecture resnet18 --dataset data/images --alpha 3e4 \\
      --output-dir out/

With --eval-split, α is searched on that split (labelled like the training data: no clean labels needed) over
--alphas (default 1e3 … 1e6) unless --alpha fixes it; the card reports the accuracy before and after. The model,
correction_config.json, correction_report.json and README.md (model card) are written to --output-dir before any
push, so a failed push loses nothing: retry with `hf-verifix push DIR --repo REPO`."""


class _UsageError(Exception):
    """A bad combination of options (exit code 2)."""


# ---------------------------------------------------------------------------------------------------------- parser
def _alpha_list(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.replace(" ", ",").split(",") if part]
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"expected numbers separated by commas such as 1e3,3e4,1e6, got {text!r}"
        ) from err
    if not values or any(not (v > 0 and v < float("inf")) for v in values):
        raise argparse.ArgumentTypeError(f"every α must be a finite number > 0, got {text!r}")
    return values


def _positive_float(text: str) -> float:
    value = _alpha_list(text)
    if len(value) != 1:
        raise argparse.ArgumentTypeError(f"expected one number such as 3e4, got {text!r}")
    return value[0]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from err
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as err:  # RecursionError: nested too deeply to parse
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"n\": 10}}', got {text[:80]!r}") from err
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"n\": 10}}', got {text!r}")
    return value


def _add_model_options(parser: argparse.ArgumentParser) -> None:
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


def _add_data_options(parser: argparse.ArgumentParser, split_default: str, noisy: bool) -> Any:
    group = parser.add_argument_group("data")
    group.add_argument(
        "--dataset", required=True, help="Hub dataset ID, save_to_disk folder, image folder or .parquet/.csv file"
    )
    group.add_argument(
        "--split", default=split_default, help=f"split, optionally sliced: 'train[:80%%]' (default: {split_default})"
    )
    group.add_argument("--image-column", help="image column (default: detected)")
    group.add_argument("--label-column", help="label column (default: detected)")
    group.add_argument(
        "--align-labels",
        action="store_true",
        help="renumber the label column's ClassLabel classes to the model's (matched by name, case-insensitive)",
    )
    if noisy:
        labels = group.add_mutually_exclusive_group()
        labels.add_argument(
            "--noisy-labels",
            metavar="FILE",
            help="the labels the model was trained with, one per row of --split (.txt one per line, .npy, .json)",
        )
        labels.add_argument("--noisy-label-column", metavar="COLUMN", help="the training labels, as a column")
    group.add_argument("--dataset-cache-dir", help="datasets cache folder (default: HF_DATASETS_CACHE)")
    group.add_argument("--limit", type=_positive_int, help="use at most N rows of each split (a seeded random subset)")
    group.add_argument("--batch-size", type=_positive_int, default=64, help="batch size of every pass (default: 64)")
    group.add_argument("--seed", type=int, default=0, help="seed of every random choice (default: 0)")
    group.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return group


def _add_selection_options(parser: argparse.ArgumentParser) -> Any:
    group = parser.add_argument_group("trusted set")
    group.add_argument(
        "--selector", default="loss", help="trusted-sample selector (default: loss; see hf_verifix.list_selectors())"
    )
    group.add_argument("--selector-kwargs", type=_json_object, help="JSON keyword arguments of the selector")
    group.add_argument("--n-trusted", type=_positive_int, default=1000, help="size of the trusted set (default: 1000)")
    group.add_argument("--per-class", action="store_true", help="take n_trusted / K samples from each class")
    return group


def build_parser() -> argparse.ArgumentParser:
    """Return the ``hf-verifix`` argument parser (subcommands correct, evaluate, select, push, env).

    Example:
        >>> build_parser().parse_args(["push", "out", "--repo", "me/model"]).repo
        'me/model'
    """
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Repair image classifiers trained on noisy labels by Scaled Activation Projection (SAP, Verifix).",
        epilog=_EPILOG_MAIN,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="print the traceback of a failure")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    correct = commands.add_parser(
        "correct",
        help="correct a model and save (and push) it with its model card",
        description="Correct a classifier trained on noisy labels; save it with a model card; optionally push it.",
        epilog=_EPILOG_CORRECT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_model_options(correct)
    data = _add_data_options(correct, "train", noisy=True)
    data.add_argument(
        "--eval-split",
        help="held-out split, labelled like the training data, to choose α on and report accuracy (sliced like "
        "--split)",
    )
    data.add_argument(
        "--eval-noisy-labels",
        metavar="FILE",
        help="labels of --eval-split as noisy as the training labels (with --noisy-labels), one per row",
    )
    trusted = _add_selection_options(correct)
    trusted.add_argument(
        "--trusted",
        metavar="FILE",
        help="use these trusted row indices (from `select`, .json/.csv/.txt) instead of a selector",
    )
    projection = correct.add_argument_group("projection")
    alphas = projection.add_mutually_exclusive_group()
    alphas.add_argument("--alpha", type=_positive_float, help="apply this α (no search)")
    alphas.add_argument(
        "--alphas", type=_alpha_list, help="α values to search on --eval-split (default: 1e3,3e3,...,1e6)"
    )
    projection.add_argument(
        "--recalibrate-batchnorm", action="store_true", help="re-estimate BatchNorm statistics on the trusted set"
    )
    projection.add_argument("--target-modules", nargs="+", metavar="REGEX", help="only correct layers matching these")
    projection.add_argument(
        "--exclude-modules", nargs="+", metavar="REGEX", help="never correct layers matching these (e.g. fc)"
    )
    projection.add_argument(
        "--on-uncorrectable",
        choices=["error", "skip"],
        default="error",
        help="a layer that cannot be corrected exactly (e.g. timm Conv2dSame): refuse the model before any work "
        "(error, default) or leave that layer unchanged (skip)",
    )
    output = correct.add_argument_group("output")
    output.add_argument("--output-dir", help="folder for the corrected model and card (default: ./<model name>-sap)")
    output.add_argument("--push-to-hub", metavar="REPO", help="push the output folder to this model repo (one commit)")
    output.add_argument("--private", action="store_true", help="create the repo private")
    output.add_argument(
        "--overwrite", action="store_true", help="replace a model or card already in --output-dir or on the repo"
    )
    output.add_argument(
        "--no-report",
        action="store_true",
        help="skip the correction report (report.md and its figures, embedded in the card; written when there is an "
        "--eval-split and matplotlib is installed)",
    )
    correct.set_defaults(handler=_cmd_correct)

    evaluate = commands.add_parser(
        "evaluate",
        help="print a model's accuracy on a split",
        description="Print a model's accuracy (JSON) on a split of a dataset.",
        epilog="example:\n  hf-verifix evaluate --model out/ --dataset data/images --split test --output scores.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_model_options(evaluate)
    _add_data_options(evaluate, "test", noisy=False)
    evaluate.add_argument("--output", metavar="FILE", help="also write the result as JSON to FILE")
    evaluate.set_defaults(handler=_cmd_evaluate)

    select = commands.add_parser(
        "select",
        help="write the trusted samples a selector picks, with their scores",
        description="Select trusted samples and write their row indices, scores and labels (JSON or CSV).",
        epilog="example:\n  hf-verifix select --model runs/resnet18 --dataset data/images --per-class --n-trusted 500 "
        "--output trusted.csv\n  hf-verifix correct ... --trusted trusted.csv   # after reviewing them",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_model_options(select)
    _add_data_options(select, "train", noisy=True)
    _add_selection_options(select)
    select.add_argument("--output", metavar="FILE", required=True, help="output file: .json or .csv")
    select.set_defaults(handler=_cmd_select)

    push = commands.add_parser(
        "push",
        help="push an output folder to a Hub model repo",
        description="Upload a folder written by `correct` to a Hub model repo in one commit.",
        epilog="example:\n  hf-verifix push out/ --repo me/resnet18-sap --private",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    push.add_argument("folder", help="folder written by `hf-verifix correct`")
    push.add_argument("--repo", required=True, help="model repo ID (namespace/name)")
    push.add_argument("--overwrite", action="store_true", help="replace a model or card already on the repo")
    push.add_argument("--private", action="store_true", help="create the repo private")
    push.add_argument("--commit-message", help="commit message")
    push.set_defaults(handler=_cmd_push)

    env = commands.add_parser(
        "env",
        help="print versions and settings for bug reports (no secrets)",
        description="Print library versions and Hub settings for a bug report. Tokens are never printed.",
    )
    env.add_argument("--json", action="store_true", help="print as JSON")
    env.set_defaults(handler=_cmd_env)
    return parser


# ---------------------------------------------------------------------------------------------------------- helpers
def _main_process() -> bool:
    from .utils.distributed import is_main_process

    return is_main_process()


def _say(*parts: Any) -> None:
    if _main_process():
        print(*parts, flush=True)


def _warn(message: str) -> None:
    if _main_process():
        print(f"{PROG}: warning: {message}", file=sys.stderr, flush=True)


def _check_device(requested: str | None) -> None:
    """Refuse, before loading anything, a --device torch does not know or this machine does not have."""
    if not requested:
        return
    import torch

    from .config import available_devices, unavailable_device

    try:
        torch.device(requested)
    except (RuntimeError, ValueError) as err:
        raise _UsageError(
            f"--device {requested!r} is not a torch device ({err}); available devices: "
            f"{', '.join(available_devices())} (or omit --device: cuda when available, else cpu)"
        ) from err
    if unavailable_device(requested) is not None:
        raise _UsageError(
            f"--device {requested!r} is not available on this machine; available devices: "
            f"{', '.join(available_devices())}. Pass one of them, or omit --device (cuda when available, else cpu)"
        )


def _check_selector_kwargs(name: str, kwargs: dict[str, Any] | None) -> None:
    """Refuse, before loading anything, --selector-kwargs that the selector's constructor does not accept or rejects.

    The accepted keywords are read from the registered selector's signature, so the message lists them.
    """
    import inspect

    from .selection import get_selector
    from .selection.base import _REGISTRY

    signature = inspect.signature(_REGISTRY[name])
    keywords = [
        p.name + (" (required)" if p.default is p.empty else "")
        for p in signature.parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    accepted = f"accepts {', '.join(keywords)}" if keywords else "accepts no keyword arguments"
    given = json.dumps(kwargs or {}, sort_keys=True)
    try:
        signature.bind(**(kwargs or {}))
    except TypeError as err:
        raise _UsageError(
            f"--selector-kwargs {given} does not fit the {name!r} selector ({err}): it {accepted}; fix or drop "
            "--selector-kwargs"
        ) from err
    try:
        get_selector(name, **(kwargs or {}))
    except (TypeError, ValueError) as err:  # ConfigError and DataError are ValueErrors
        raise _UsageError(
            f"--selector-kwargs {given}: the {name!r} selector rejects them ({err}); it {accepted}"
        ) from err


def _device(requested: str | None) -> Any:
    import torch

    if requested:
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def _load_model(args: argparse.Namespace) -> Any:
    from .hub import load_model

    loaded = load_model(
        args.model,
        revision=args.revision,
        architecture=args.architecture,
        trust_remote_code=args.trust_remote_code,
        cache_dir=args.cache_dir,
    )
    loaded.model.to(_device(args.device))
    return loaded


def _load_split(args: argparse.Namespace, split: str, training: bool) -> Any:
    from .hub import load_data

    return load_data(
        args.dataset,
        split,
        image_column=args.image_column,
        label_column=args.label_column,
        noisy_labels=getattr(args, "noisy_labels" if training else "eval_noisy_labels", None),
        noisy_label_column=getattr(args, "noisy_label_column", None) if training else None,
        limit=args.limit,
        seed=args.seed,
        cache_dir=args.dataset_cache_dir,
    )


def _align_labels(loaded: Any, data: Any, args: argparse.Namespace) -> None:
    """With ``--align-labels``, renumber the dataset's own ClassLabel column to the model's class names (in place).

    Labels given separately (``--noisy-labels``, ``--noisy-label-column``) are the ones the model was trained on, so
    already in its numbering: then the dataset's own labels (``reference_column``, which measure the trusted set's
    precision) are the column renumbered.
    """
    if not getattr(args, "align_labels", False):
        return
    from .errors import DataError
    from .models.adapters import class_names as model_class_names

    column = data.reference_column or data.label_column
    names = model_class_names(loaded.model)
    feature = data.dataset.features[column]
    if names is None:
        raise DataError(
            "--align-labels needs the model's class names (config.id2label, or timm's pretrained_cfg label_names), "
            "but the model has none; drop --align-labels"
        )
    lowered = [n.lower() for n in names]
    repeated = sorted({n for n in lowered if lowered.count(n) > 1})
    if repeated:
        raise DataError(
            f"--align-labels matches classes by name, but the model's names {repeated[:5]} are used by several "
            "classes; drop --align-labels and renumber the labels yourself"
        )
    if not hasattr(feature, "names"):
        raise DataError(
            f"--align-labels renumbers a ClassLabel column, but {column!r} is a {type(feature).__name__}; drop "
            "--align-labels, or cast the column to datasets.ClassLabel(names=...) first"
        )
    missing = sorted({n.lower() for n in feature.names} - set(lowered))
    if missing:
        raise DataError(
            f"--align-labels: the dataset's classes {missing[:5]} are not among the model's {names[:10]}; the names "
            "must match (case-insensitive)"
        )
    data.dataset = data.dataset.align_labels_with_mapping({n: i for i, n in enumerate(names)}, column)


def _check_labels(loaded: Any, data: Any, split: str) -> None:
    from .errors import DataError

    classes = loaded.num_classes
    labels = data.labels()
    if classes is not None and labels.numel() and int(labels.max()) >= classes:
        raise DataError(
            f"split {split!r} has labels up to {int(labels.max())} in column {data.label_column!r}, but the model "
            f"predicts {classes} classes; pass the label column the model was trained on (--label-column)"
        )


def _source(loaded: Any, data: Any, batch_size: int) -> Any:
    from .data.source import as_source

    return as_source(data.dataset, loaded.model, batch_size, data.image_column, data.label_column, loaded.transform)


def _read_trusted(path: str, data: Any) -> list[int]:
    from .errors import DataError

    source = Path(path)
    if not source.is_file():
        raise DataError(f"no trusted-index file at {path!r}; write one with `hf-verifix select --output FILE`")
    text = source.read_text(encoding="utf-8")
    try:
        if source.suffix == ".json":
            value = json.loads(text)
            rows = value["indices"] if isinstance(value, dict) else value
        elif source.suffix == ".csv":
            reader = csv.DictReader(text.splitlines())
            rows = [row["index"] for row in reader]
        else:
            rows = [line.split(",")[0] for line in text.splitlines() if line.strip()]
        indices = [int(r) for r in rows]
    except (KeyError, TypeError, ValueError, json.JSONDecodeError, RecursionError) as err:
        raise DataError(
            f"cannot read trusted row indices from {path!r} ({type(err).__name__}: {err}); expected `select` output "
            "(.json with 'indices', .csv with an 'index' column) or one integer per line"
        ) from err
    position = {row: i for i, row in enumerate(data.rows)}
    missing = [i for i in indices if i not in position]
    if missing:
        raise DataError(
            f"{len(missing)} trusted index(es) from {path!r} (e.g. {missing[:5]}) are not among the rows used "
            "(check --split and --limit: indices refer to rows of the split)"
        )
    return [position[i] for i in indices]


def _run_quietly(function: Any, *args: Any, **kwargs: Any) -> Any:
    """Run ``function``; hf_verifix's warnings (e.g. layers left uncorrected) are printed as CLI warnings."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            return function(*args, **kwargs)
        finally:
            seen: set[str] = set()
            for item in caught:
                text = str(item.message)
                if text in seen:
                    continue
                seen.add(text)
                if Path(item.filename).resolve().is_relative_to(_PACKAGE_DIR):
                    _warn(text)
                elif not issubclass(item.category, (DeprecationWarning, PendingDeprecationWarning)):
                    _warn(f"{item.category.__name__}: {text}")  # as Python shows them by default


def _default_output_dir(model: str) -> Path:
    name = Path(model.removeprefix("hf-hub:").split("@")[0].rstrip("/")).name or "model"
    return Path(f"{Path(name).stem}-sap")


def _reproduce_command(args: argparse.Namespace, loaded: Any, train: Any, alphas: list[float] | None) -> str:
    """The ``hf-verifix correct`` command of this run, for the card: local paths by their base names (run it from
    the folder holding the model and data), Hub IDs as given, no secrets."""
    from .hub import scrub_secrets
    from .reporting.model_card import shareable_name

    def local(path: str) -> str:
        return shareable_name(path, is_hub=False)

    model = args.model if loaded.repo_id is not None else shareable_name(args.model, False, "./model")
    parts = [PROG, "correct", "--model", model]
    if loaded.revision:
        parts += ["--revision", loaded.revision]
    if args.architecture:
        parts += ["--architecture", args.architecture]
    if args.trust_remote_code:
        parts.append("--trust-remote-code")
    parts += ["--dataset", shareable_name(args.dataset, train.is_hub, "./data"), "--split", args.split]
    if args.eval_split:
        parts += ["--eval-split", args.eval_split]
    if args.eval_noisy_labels:
        parts += ["--eval-noisy-labels", local(args.eval_noisy_labels)]
    parts += ["--image-column", train.image_column]
    label = train.reference_column if train.reference_column else train.label_column
    if label and (train.reference_column or not (args.noisy_labels or args.noisy_label_column)):
        parts += ["--label-column", label]
    if args.align_labels:
        parts.append("--align-labels")
    if args.noisy_labels:
        parts += ["--noisy-labels", local(args.noisy_labels)]
    if args.noisy_label_column:
        parts += ["--noisy-label-column", args.noisy_label_column]
    if args.limit:
        parts += ["--limit", str(args.limit)]
    if args.trusted:
        parts += ["--trusted", local(args.trusted)]
    else:
        parts += ["--selector", args.selector]
        if args.selector_kwargs:
            parts += ["--selector-kwargs", json.dumps(args.selector_kwargs, sort_keys=True)]
        parts += ["--n-trusted", str(args.n_trusted)]
        if args.per_class:
            parts.append("--per-class")
    if alphas is None:
        parts += ["--alpha", format_alpha(args.alpha)]
    else:
        parts += ["--alphas", ",".join(format_alpha(a) for a in alphas)]
    if args.recalibrate_batchnorm:
        parts.append("--recalibrate-batchnorm")
    if args.target_modules:
        parts += ["--target-modules", *args.target_modules]
    if args.exclude_modules:
        parts += ["--exclude-modules", *args.exclude_modules]
    if args.on_uncorrectable != "error":
        parts += ["--on-uncorrectable", args.on_uncorrectable]
    output = shareable_name(str(args.output_dir), False, "./output")
    parts += ["--batch-size", str(args.batch_size), "--seed", str(args.seed), "--output-dir", output]
    return scrub_secrets(shlex.join(parts))


def _check_selector(name: str) -> None:
    from .selection import list_selectors

    if name not in list_selectors():
        raise _UsageError(f"--selector {name!r} is not a registered selector; choose one of {list_selectors()}")


def _check_repo_before_work(repo_id: str, overwrite: bool) -> None:
    """Refuse at once, before any computation, a push that cannot happen or would replace a model or card."""
    from .hub import HubError, repo_clashes, scrub_secrets
    from .results import output_files

    if not _main_process():
        return
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        raise HubError(
            f"--push-to-hub {repo_id} needs the Hub, but offline mode is on (HF_HUB_OFFLINE=1); unset it, or drop "
            "--push-to-hub and push the output folder later with `hf-verifix push DIR --repo REPO`"
        )
    if overwrite:
        return
    try:
        clashes = repo_clashes(repo_id, list(output_files()))
    except Exception as err:  # the Hub may be back by the end: the final push reports any real failure
        reason = scrub_secrets(f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}")
        _warn(f"could not check {repo_id!r} on the Hub before correcting ({reason}); correcting anyway")
        return
    if clashes:
        raise HubError(
            f"{repo_id!r} already holds {', '.join(clashes)}; pass --overwrite to replace them, or push to another "
            "repo (checked before correcting, so nothing was computed)"
        )


def _correction_config(
    args: argparse.Namespace, image_column: str | None = None, label_column: str | None = None
) -> Any:
    """The CorrectionConfig of the options; a value it rejects is a usage error naming the flag."""
    from . import CorrectionConfig
    from .errors import ConfigError

    try:
        return CorrectionConfig(
            n_trusted=args.n_trusted,
            selector=args.selector,
            selector_kwargs=args.selector_kwargs,
            per_class=args.per_class,
            target_modules=args.target_modules,
            exclude_modules=args.exclude_modules,
            on_uncorrectable=args.on_uncorrectable,
            recalibrate_batchnorm=args.recalibrate_batchnorm,
            batch_size=args.batch_size,
            image_column=image_column,
            label_column=label_column,
            seed=args.seed,
            progress=not args.no_progress,
            **({"alpha": args.alpha} if args.alpha else {}),
        )
    except ConfigError as err:
        field = re.match(r"(?:every )?(\w+)", str(err))
        flag = _CONFIG_FLAGS.get(field[1] if field else "")
        raise _UsageError(f"{flag}: {err}" if flag else str(err)) from err


# The CorrectionConfig field each option sets, so the library's messages (which name fields) name the flag too.
_CONFIG_FLAGS = {
    "alpha": "--alpha",
    "alpha_grid": "--alphas",
    "n_trusted": "--n-trusted",
    "selector": "--selector",
    "selector_kwargs": "--selector-kwargs",
    "target_modules": "--target-modules",
    "exclude_modules": "--exclude-modules",
    "batch_size": "--batch-size",
    "seed": "--seed",
    "image_column": "--image-column",
    "label_column": "--label-column",
}


def _blocking_file(path: Path) -> Path | None:
    """The first existing folder above ``path`` that is really a file (nothing can be written below it), or None."""
    return next((p for p in path.absolute().parents if p.exists() and not p.is_dir()), None)


def _check_output_dir(output: Path) -> None:
    """Refuse at once an --output-dir that is a file, or lies inside one: the save at the end could not create it."""
    if output.exists() and not output.is_dir():
        raise FileExistsError(
            f"--output-dir {str(output)!r} is a file, not a folder; choose another --output-dir (or move the file "
            "away). Checked before correcting, so nothing was computed"
        )
    blocking = _blocking_file(output)
    if blocking is not None:
        raise NotADirectoryError(
            f"--output-dir {str(output)!r} cannot be created: {str(blocking)!r} is a file, not a folder; choose "
            "another --output-dir. Checked before correcting, so nothing was computed"
        )


def _check_output_file(path: Path, example: str) -> None:
    """Refuse at once an --output that is a folder: the result could not be written there at the end."""
    if path.is_dir():
        raise IsADirectoryError(
            f"--output {str(path)!r} is a folder; pass a file path inside it such as "
            f"{str(path / example)!r}. Checked before loading, so nothing was computed"
        )
    blocking = _blocking_file(path)
    if blocking is not None:
        raise NotADirectoryError(
            f"--output {str(path)!r} cannot be written: {str(blocking)!r} is a file, not a folder; pass another "
            "--output path"
        )


# ---------------------------------------------------------------------------------------------------------- commands
def _cmd_correct(args: argparse.Namespace) -> int:
    from . import ProjectionCorrector
    from .integrations.export import protected_files
    from .utils.hub import is_repo_id

    _check_selector(args.selector)
    if args.eval_noisy_labels and not args.eval_split:
        raise _UsageError("--eval-noisy-labels labels the rows of --eval-split: add --eval-split SPLIT")
    if args.alphas and not args.eval_split:
        raise _UsageError("--alphas needs held-out data to choose α on: add --eval-split SPLIT (or fix --alpha)")
    if args.push_to_hub and not is_repo_id(args.push_to_hub):
        raise _UsageError(f"--push-to-hub expects a repo ID such as me/model-sap, got {args.push_to_hub!r}")
    if args.trusted and (args.selector_kwargs or args.per_class):
        raise _UsageError("--trusted gives the trusted set itself; drop --selector-kwargs / --per-class")
    _check_selector_kwargs(args.selector, args.selector_kwargs)
    _check_device(args.device)
    _correction_config(args)  # every option value the configuration rejects is refused before any loading
    args.output_dir = str(args.output_dir or _default_output_dir(args.model))
    output = Path(args.output_dir)
    _check_output_dir(output)
    existing = protected_files(output)
    if existing and not args.overwrite:
        raise FileExistsError(
            f"{str(output)!r} already holds {', '.join(existing)}; pass --overwrite to replace them, or choose "
            "another --output-dir"
        )
    if args.push_to_hub:
        _check_repo_before_work(args.push_to_hub, args.overwrite)
    from .utils.distributed import process_rank_and_count

    world = process_rank_and_count()[1]
    if world > 1:
        _say(f"running on {world} processes; only the main process writes and pushes")
    loaded = _load_model(args)
    from .statistics.layers import find_target_layers

    # A model with layers that cannot be corrected is refused before any data is loaded (fit checks again).
    find_target_layers(loaded.model, args.target_modules, args.exclude_modules, args.on_uncorrectable)
    train = _load_split(args, args.split, training=True)
    _align_labels(loaded, train, args)
    _check_labels(loaded, train, args.split)
    evaluation = None
    if args.eval_split:
        if args.eval_split == args.split:
            _warn(
                f"--eval-split is the training split {args.split!r}: α will be chosen on the data the trusted set "
                "comes from; hold out other rows (e.g. --split 'train[:80%]' --eval-split 'train[80%:]')"
            )
        if (args.noisy_labels or args.noisy_label_column) and not args.eval_noisy_labels:
            _warn(
                f"the training labels are given separately but --eval-split {args.eval_split!r} is scored with the "
                "dataset's own labels: if those are clean, choosing α on them uses clean labels; pass "
                "--eval-noisy-labels FILE to score it with labels as noisy as the training ones"
            )
        evaluation = _load_split(args, args.eval_split, training=False)
        _align_labels(loaded, evaluation, args)
        _check_labels(loaded, evaluation, args.eval_split)
        # The corrector reads every split with the training split's column names.
        renames = {evaluation.label_column: train.label_column, evaluation.image_column: train.image_column}
        renames = {a: b for a, b in renames.items() if a != b}
        if renames:
            kept = evaluation.dataset.remove_columns(
                [b for b in renames.values() if b in evaluation.dataset.column_names]
            )
            evaluation.dataset = kept.rename_columns(renames)

    config = _correction_config(args, train.image_column, train.label_column)
    trusted = _read_trusted(args.trusted, train) if args.trusted else None
    clean = train.labels(train.reference_column) if train.reference_column else None
    if evaluation is None and args.alpha is None:
        args.alpha = config.alpha  # for the command the card shows
        _warn(f"no --eval-split: applying α = {format_alpha(config.alpha)} without checking it on held-out data")
    corrector = ProjectionCorrector(loaded.model, config)
    result = _run_quietly(
        corrector.correct,
        train.dataset,
        evaluation.dataset if evaluation is not None else None,
        alpha=args.alpha,
        alphas=args.alphas if evaluation is not None and args.alpha is None else None,
        trusted_indices=trusted,
        transform=loaded.transform,
        clean_labels=clean,
    )
    alphas = None if result.search is None else list(result.search.curve)
    if result.search is not None and result.search.best_alpha is None:
        _warn("no α beat the uncorrected model on the held-out split; the weights are left unchanged")
    report = evaluation is not None and not args.no_report
    if report and importlib.util.find_spec("matplotlib") is None:
        _warn("matplotlib is not installed, so the card has no report figures (pip install matplotlib)")
        report = False
    if _main_process():
        _save_and_push(args, corrector, result, loaded, train, evaluation, output, alphas, report)
    return 0


def _save_and_push(
    args: argparse.Namespace,
    corrector: Any,
    result: Any,
    loaded: Any,
    train: Any,
    evaluation: Any,
    output: Path,
    alphas: list[float] | None,
    report: bool,
) -> None:
    """Main process: write the corrected model, its card (embedding the report's figures) and push it if asked."""
    from .integrations.export import save_corrected
    from .integrations.hub import push_folder
    from .reporting.model_card import CardInfo, shareable_name

    card = CardInfo(
        model_name=(args.push_to_hub or output.resolve().name).split("/")[-1],
        base_model=loaded.repo_id or shareable_name(args.model, is_hub=False),
        base_model_is_hub=loaded.repo_id is not None,
        base_model_revision=loaded.revision,
        library_name=loaded.library,
        dataset=shareable_name(train.source, train.is_hub, "./data"),
        dataset_is_hub=train.is_hub,
        train_split=args.split,
        eval_split=args.eval_split,
        label_column=evaluation.label_column if evaluation is not None else train.label_column,
        eval_labels=f"`{Path(args.eval_noisy_labels).name}`" if args.eval_noisy_labels else None,
        noisy_labels=(
            f"from `{Path(args.noisy_labels).name}`"
            if args.noisy_labels
            else f"column `{args.noisy_label_column}`"
            if args.noisy_label_column
            else None
        ),
        command=_reproduce_command(args, loaded, train, alphas),
        repo_id=args.push_to_hub,
    )
    names = _class_names_of(evaluation) if report else None
    save_corrected(
        corrector,
        output,
        result=result,
        processor=loaded.processor,
        card_info=card,
        report=report,
        class_names=names,
        overwrite=args.overwrite,
    )
    before, after = result.accuracy_before, result.accuracy_after
    if before is not None and after is not None:
        alpha_text = format_alpha(result.alpha)
        _say(f"accuracy on {args.eval_split}: {100 * before:.2f}% before, {100 * after:.2f}% after (α = {alpha_text})")
    else:
        _say(f"applied α = {format_alpha(result.alpha)} (not evaluated: no --eval-split)")
    _say(f"saved the corrected model and its card to {output}")
    if args.push_to_hub:
        alpha_text = format_alpha(result.alpha)
        url = push_folder(
            output,
            args.push_to_hub,
            overwrite=args.overwrite,
            private=True if args.private else None,
            commit_message=f"Upload SAP-corrected {card.base_model} (α = {alpha_text}, hf_verifix)",
        )
        _say(f"pushed to {args.push_to_hub}: {url}")


def _class_names_of(evaluation: Any) -> list[str] | None:
    """The evaluation split's class names when its label column is a ``ClassLabel`` (else the report uses ids)."""
    feature = evaluation.dataset.features.get(evaluation.label_column)
    names = getattr(feature, "names", None)
    return [str(n) for n in names] if isinstance(names, list) else None


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .metrics import source_accuracy

    _check_device(args.device)
    if args.output:
        _check_output_file(Path(args.output), "scores.json")
    loaded = _load_model(args)
    data = _load_split(args, args.split, training=False)
    _align_labels(loaded, data, args)
    _check_labels(loaded, data, args.split)
    accuracy = source_accuracy(loaded.model, _source(loaded, data, args.batch_size), not args.no_progress)
    result = {
        "model": args.model,
        "dataset": args.dataset,
        "split": args.split,
        "label_column": data.label_column,
        "samples": data.num_rows,
        "accuracy": accuracy,
    }
    if _main_process():
        text = json.dumps(result, indent=2)
        if args.output:
            _write_text(Path(args.output), text + "\n")
        print(text, flush=True)
    return 0


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:  # never leave the temporary file behind (e.g. path is a folder, or Ctrl-C)
        tmp.unlink(missing_ok=True)
        raise


def _cmd_select(args: argparse.Namespace) -> int:
    from .selection import get_selector

    _check_selector(args.selector)
    _check_selector_kwargs(args.selector, args.selector_kwargs)
    _check_device(args.device)
    output = Path(args.output)
    if output.suffix not in (".json", ".csv"):
        raise _UsageError(f"--output must end in .json or .csv, got {args.output!r}")
    _check_output_file(output, "trusted.json")
    loaded = _load_model(args)
    data = _load_split(args, args.split, training=True)
    _align_labels(loaded, data, args)
    _check_labels(loaded, data, args.split)
    from .errors import DataError

    if args.n_trusted > data.num_rows:
        raise DataError(f"--n-trusted {args.n_trusted} is larger than the data ({data.num_rows} rows); lower it")
    selector = get_selector(args.selector, **(args.selector_kwargs or {}))
    source = _source(loaded, data, args.batch_size)
    selection = _run_quietly(
        selector.select, loaded.model, source, args.n_trusted, args.per_class, args.seed, not args.no_progress
    )
    if not _main_process():
        return 0
    chosen = [int(i) for i in selection.indices.tolist()]
    rows = [data.rows[i] for i in chosen]
    scores = [float(selection.scores[i]) for i in chosen]
    labels = [int(selection.labels[i]) for i in chosen]
    if output.suffix == ".json":
        payload = {
            "model": args.model,
            "dataset": args.dataset,
            "split": args.split,
            "label_column": data.label_column,
            "selector": args.selector,
            "selector_kwargs": args.selector_kwargs,
            "n_trusted": args.n_trusted,
            "per_class": args.per_class,
            "seed": args.seed,
            "score": "lower is more trusted",
            "indices": rows,
            "scores": scores,
            "labels": labels,
        }
        _write_text(output, json.dumps(payload, indent=2) + "\n")
    else:
        lines = [
            "index,score,label",
            *(f"{r},{s!r},{label}" for r, s, label in zip(rows, scores, labels, strict=True)),
        ]
        _write_text(output, "\n".join(lines) + "\n")
    _say(f"wrote {len(rows)} trusted row indices ({args.selector}, lower score = more trusted) to {output}")
    return 0


def _cmd_push(args: argparse.Namespace) -> int:
    from .hub import is_repo_id, push_folder

    if not is_repo_id(args.repo):
        raise _UsageError(f"--repo expects a repo ID such as me/model-sap, got {args.repo!r}")
    url = push_folder(
        args.folder,
        args.repo,
        overwrite=args.overwrite,
        private=True if args.private else None,
        commit_message=args.commit_message,
    )
    _say(f"pushed {args.folder} to {args.repo}: {url}")
    return 0


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def environment_report() -> dict[str, str]:
    """Versions and Hub settings for a bug report; a token is reported as set or not, never shown.

    Example:
        >>> "huggingface_hub" in environment_report()
        True
    """
    from ._version import __version__
    from .hub import resolve_endpoint, scrub_secrets

    report = {
        "hf_verifix": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    for package in (
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
    ):
        report[package] = _version(package)
    try:
        import torch

        report["cuda"] = (
            f"{torch.version.cuda} ({torch.cuda.device_count()} device(s))"
            if torch.cuda.is_available()
            else "not available"
        )
    except Exception as err:  # a broken torch install is exactly what a bug report needs to show
        report["cuda"] = f"unknown ({type(err).__name__})"
    report["HF_ENDPOINT"] = resolve_endpoint()
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HOME", "HF_HUB_CACHE", "WORLD_SIZE"):
        report[name] = os.environ.get(name, "unset")
    if os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN"):
        report["hub token"] = "set (environment)"
    else:
        try:
            from huggingface_hub import get_token

            report["hub token"] = "set (stored login)" if get_token() else "not set"
        except Exception:
            report["hub token"] = "unknown"
    return {key: scrub_secrets(value) for key, value in report.items()}


def _cmd_env(args: argparse.Namespace) -> int:
    report = environment_report()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        width = max(map(len, report))
        for key, value in report.items():
            print(f"{key + ':':<{width + 1}} {value}")
    return 0


# ---------------------------------------------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> int:
    """Run ``hf-verifix`` with ``argv`` (default: ``sys.argv[1:]``); return the exit code instead of exiting.

    Exit codes: 0 success; 1 a failure while running (the message on stderr says what to do; ``--debug`` adds the
    traceback); 2 a usage error (including option values the configuration rejects); 130 interrupted.

    Example:
        >>> main(["push", "out", "--repo", "not a repo"])
        2
    """
    from .errors import ConfigError
    from .hub import scrub_secrets

    parser = build_parser()
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as exit:  # --help (0) or a usage error (2): argparse already printed why
        return exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 2)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    from .utils.staging import terminate_as_exit

    if getattr(args, "no_progress", False):
        from .utils.progress import disable_ecosystem_progress_bars

        disable_ecosystem_progress_bars()  # the Hub's, datasets' and transformers' bars too
    try:
        with terminate_as_exit():  # SIGTERM unwinds like Ctrl-C (temporary folders removed), exit status 143
            return int(args.handler(args))
    except _UsageError as err:
        print(f"{PROG} {args.command}: error: {scrub_secrets(str(err))}", file=sys.stderr, flush=True)
        return 2
    except ConfigError as err:  # an option value the configuration rejects (unknown selector, seed < 0...)
        print(f"{PROG} {args.command}: error: {scrub_secrets(str(err))}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr, flush=True)
        return 130
    except Exception as err:
        from .errors import VerifixError

        known = isinstance(err, (VerifixError, OSError))
        message = str(err) if known else f"{type(err).__name__}: {err}"
        print(f"{PROG} {args.command}: error: {scrub_secrets(message)}", file=sys.stderr, flush=True)
        if args.debug:
            print(scrub_secrets("".join(traceback.format_exception(err))), file=sys.stderr, flush=True)
        elif not known:
            print(f"{PROG}: run with --debug for the traceback", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
