"""``hf-verifix correct``: correct a classifier trained on noisy labels, save it with its model card, push it.

The options are checked before anything is loaded; then :meth:`~hf_verifix.ProjectionCorrector.correct` selects the
trusted set, fits, and chooses α on ``--eval-split``, and :func:`~hf_verifix.integrations.export.save_corrected`
writes the model, report and card (main process only) before :func:`~hf_verifix.hub.push_folder` pushes them.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path
from typing import Any

from ..config import CorrectionConfig
from ..corrector import ProjectionCorrector
from ..data.labels import read_trusted
from ..errors import ConfigError, HubError
from ..hub import LoadedData, LoadedModel, is_repo_id, push_folder, repo_clashes, save_corrected, scrub_secrets
from ..integrations.export import protected_files
from ..results import CorrectionResult, format_alpha, output_files
from ..statistics.layers import find_target_layers
from ..utils.distributed import is_main_process, process_rank_and_count
from ..utils.hub import hub_offline
from ._card import card_info, class_names_of, default_output_dir
from ._common import (
    UsageError,
    check_device,
    check_selector,
    check_selector_kwargs,
    load_labelled_split,
    load_model_of,
    run_quietly,
    say,
    warn,
    writable_path,
)
from ._options import (
    add_command,
    add_data_options,
    add_model_options,
    add_selection_options,
    alpha_list,
    positive_float,
    positive_int,
    with_flag,
)

__all__ = ["add_parser", "correction_config", "run"]

EPILOG = """\
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


# ---------------------------------------------------------------------------------------------------------- parser
def _add_projection_options(parser: argparse.ArgumentParser) -> None:
    projection = parser.add_argument_group("projection")
    alphas = projection.add_mutually_exclusive_group()
    alphas.add_argument("--alpha", type=positive_float, help="apply this α (no search)")
    alphas.add_argument(
        "--alphas", type=alpha_list, help="α values to search on --eval-split (default: 1e3,3e3,...,1e6)"
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
    projection.add_argument(
        "--solver",
        choices=["auto", "cholesky", "eigh"],
        default="auto",
        help="each α by one Cholesky solve, by one eigendecomposition per layer, or whichever is cheaper (auto)",
    )
    projection.add_argument(
        "--gram-precision",
        choices=["float64", "float32"],
        default="float64",
        help="dtype of each chunk's Gram product (float32: faster, measured less exact; see the README)",
    )
    projection.add_argument(
        "--max-rows-per-layer",
        type=positive_int,
        metavar="N",
        help="opt-in: keep about N rows per layer (the same random positions of every image); default every row",
    )


def _add_output_options(parser: argparse.ArgumentParser) -> None:
    output = parser.add_argument_group("output")
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


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """The ``correct`` parser: model, data, trusted-set, projection and output options; its handler is :func:`run`.

    Example:
        >>> correct = add_parser(argparse.ArgumentParser().add_subparsers())
        >>> correct.parse_args(["--model", "m", "--dataset", "d", "--alpha", "3e4"]).alpha
        30000.0
    """
    correct = add_command(
        subparsers,
        "correct",
        "correct a model and save (and push) it with its model card",
        "Correct a classifier trained on noisy labels; save it with a model card; optionally push it.",
        EPILOG,
    )
    add_model_options(correct)
    data = add_data_options(correct, "train", noisy=True)
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
    trusted = add_selection_options(correct)
    trusted.add_argument(
        "--trusted",
        metavar="FILE",
        help="use these trusted row indices (from `select`, .json/.csv/.txt) instead of a selector",
    )
    _add_projection_options(correct)
    _add_output_options(correct)
    correct.set_defaults(handler=run)
    return correct


# ---------------------------------------------------------------------------------------------------------- checks
def correction_config(
    args: argparse.Namespace, image_column: str | None = None, label_column: str | None = None
) -> CorrectionConfig:
    """The :class:`~hf_verifix.CorrectionConfig` of the options; a value it rejects is a usage error naming the flag.

    Example:
        >>> args = argparse.Namespace(n_trusted=500, selector="loss", selector_kwargs=None, per_class=True,
        ...     target_modules=None, exclude_modules=None, on_uncorrectable="error", recalibrate_batchnorm=False,
        ...     batch_size=64, seed=-1, no_progress=True, alpha=None, solver="auto", gram_precision="float64",
        ...     max_rows_per_layer=None)
        >>> correction_config(args)  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        UsageError: --seed: seed must be an integer in [0, 2**64 - 1] (e.g. 0), got -1
    """
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
            solver=args.solver,
            gram_precision=args.gram_precision,
            max_rows_per_layer=args.max_rows_per_layer,
            **({"alpha": args.alpha} if args.alpha else {}),
        )
    except ConfigError as err:
        raise UsageError(with_flag(str(err))) from err


def _check_options(args: argparse.Namespace) -> None:
    """Refuse a bad combination or value of the options, before anything is loaded."""
    check_selector(args.selector)
    if args.eval_noisy_labels and not args.eval_split:
        raise UsageError("--eval-noisy-labels labels the rows of --eval-split: add --eval-split SPLIT")
    if args.alphas and not args.eval_split:
        raise UsageError("--alphas needs held-out data to choose α on: add --eval-split SPLIT (or fix --alpha)")
    if args.push_to_hub and not is_repo_id(args.push_to_hub):
        raise UsageError(f"--push-to-hub expects a repo ID such as me/model-sap, got {args.push_to_hub!r}")
    if args.trusted and (args.selector_kwargs or args.per_class):
        raise UsageError("--trusted gives the trusted set itself; drop --selector-kwargs / --per-class")
    check_selector_kwargs(args.selector, args.selector_kwargs)
    check_device(args.device)
    correction_config(args)  # every option value the configuration rejects is refused before any loading


def _check_output_dir(output: Path, overwrite: bool) -> None:
    """Refuse at once an --output-dir that is a file, lies below one, or holds outputs not to be replaced."""
    checked = "Checked before correcting, so nothing was computed"
    if output.exists() and not output.is_dir():
        raise FileExistsError(
            f"--output-dir {str(output)!r} is a file, not a folder; choose another --output-dir (or move the file "
            f"away). {checked}"
        )
    writable_path(output, "--output-dir", "cannot be created", f"choose another --output-dir. {checked}")
    existing = protected_files(output)
    if existing and not overwrite:
        raise FileExistsError(
            f"{str(output)!r} already holds {', '.join(existing)}; pass --overwrite to replace them, or choose "
            "another --output-dir"
        )


def _check_repo_before_work(repo_id: str, overwrite: bool) -> None:
    """Refuse at once, before any computation, a push that cannot happen or would replace a model or card."""
    if not is_main_process():
        return
    if hub_offline():
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
        warn(f"could not check {repo_id!r} on the Hub before correcting ({reason}); correcting anyway")
        return
    if clashes:
        raise HubError(
            f"{repo_id!r} already holds {', '.join(clashes)}; pass --overwrite to replace them, or push to another "
            "repo (checked before correcting, so nothing was computed)"
        )


# ---------------------------------------------------------------------------------------------------------- run
def _load_evaluation(loaded: LoadedModel, train: LoadedData, args: argparse.Namespace) -> LoadedData:
    """The --eval-split, with the training split's column names (the corrector reads every split with those)."""
    if args.eval_split == args.split:
        warn(
            f"--eval-split is the training split {args.split!r}: α will be chosen on the data the trusted set "
            "comes from; hold out other rows (e.g. --split 'train[:80%]' --eval-split 'train[80%:]')"
        )
    if (args.noisy_labels or args.noisy_label_column) and not args.eval_noisy_labels:
        warn(
            f"the training labels are given separately but --eval-split {args.eval_split!r} is scored with the "
            "dataset's own labels: if those are clean, choosing α on them uses clean labels; pass "
            "--eval-noisy-labels FILE to score it with labels as noisy as the training ones"
        )
    evaluation = load_labelled_split(loaded, args, args.eval_split, training=False)
    renames = {evaluation.label_column: train.label_column, evaluation.image_column: train.image_column}
    renames = {a: b for a, b in renames.items() if a != b}
    if renames:
        kept = evaluation.dataset.remove_columns([b for b in renames.values() if b in evaluation.dataset.column_names])
        evaluation.dataset = kept.rename_columns(renames)
    return evaluation


def _correct(
    args: argparse.Namespace, loaded: LoadedModel, train: LoadedData, evaluation: LoadedData | None
) -> tuple[ProjectionCorrector, CorrectionResult]:
    """The library's one orchestration: select the trusted set, fit, choose α on ``evaluation`` (or apply one)."""
    config = correction_config(args, train.image_column, train.label_column)
    trusted = read_trusted(args.trusted, train.rows) if args.trusted else None
    clean = train.labels(train.reference_column) if train.reference_column else None
    if evaluation is None and args.alpha is None:
        args.alpha = config.alpha  # for the command the card shows
        warn(f"no --eval-split: applying α = {format_alpha(config.alpha)} without checking it on held-out data")
    corrector = ProjectionCorrector(loaded.model, config)
    result = run_quietly(
        corrector.correct,
        train.dataset,
        evaluation.dataset if evaluation is not None else None,
        alpha=args.alpha,
        alphas=args.alphas if evaluation is not None and args.alpha is None else None,
        trusted_indices=trusted,
        transform=loaded.transform,
        clean_labels=clean,
    )
    if result.search is not None and result.search.best_alpha is None:
        warn("no α beat the uncorrected model on the held-out split; the weights are left unchanged")
    return corrector, result


def run(args: argparse.Namespace) -> int:
    """Run ``hf-verifix correct``; return the exit code (0).

    Example:
        >>> run(argparse.Namespace(selector="nope"))  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        UsageError: --selector 'nope' is not a registered selector; choose one of [...]
    """
    _check_options(args)
    args.output_dir = str(args.output_dir or default_output_dir(args.model))
    _check_output_dir(Path(args.output_dir), args.overwrite)
    if args.push_to_hub:
        _check_repo_before_work(args.push_to_hub, args.overwrite)
    world = process_rank_and_count()[1]
    if world > 1:
        say(f"running on {world} processes; only the main process writes and pushes")
    loaded = load_model_of(args)
    # A model with layers that cannot be corrected is refused before any data is loaded (fit checks again).
    find_target_layers(loaded.model, args.target_modules, args.exclude_modules, args.on_uncorrectable)
    train = load_labelled_split(loaded, args, args.split, training=True)
    evaluation = _load_evaluation(loaded, train, args) if args.eval_split else None
    corrector, result = _correct(args, loaded, train, evaluation)
    report = _wants_report(args, evaluation)
    if is_main_process():
        _save_and_push(args, corrector, result, loaded, train, evaluation, report)
    return 0


def _wants_report(args: argparse.Namespace, evaluation: LoadedData | None) -> bool:
    report = evaluation is not None and not args.no_report
    if report and importlib.util.find_spec("matplotlib") is None:
        warn("matplotlib is not installed, so the card has no report figures (pip install matplotlib)")
        return False
    return report


def _save_and_push(
    args: argparse.Namespace,
    corrector: ProjectionCorrector,
    result: CorrectionResult,
    loaded: LoadedModel,
    train: LoadedData,
    evaluation: LoadedData | None,
    report: bool,
) -> None:
    """Main process: write the corrected model, its card (embedding the report's figures) and push it if asked."""
    output = Path(args.output_dir)
    card = card_info(args, loaded, train, evaluation, None if result.search is None else list(result.search.curve))
    names = class_names_of(evaluation) if report and evaluation is not None else None
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
    alpha_text = format_alpha(result.alpha)
    before, after = result.accuracy_before, result.accuracy_after
    if before is not None and after is not None:
        say(f"accuracy on {args.eval_split}: {100 * before:.2f}% before, {100 * after:.2f}% after (α = {alpha_text})")
    else:
        say(f"applied α = {alpha_text} (not evaluated: no --eval-split)")
    say(f"saved the corrected model and its card to {output}")
    if args.push_to_hub:
        url = push_folder(
            output,
            args.push_to_hub,
            overwrite=args.overwrite,
            private=True if args.private else None,
            commit_message=f"Upload SAP-corrected {card.base_model} (α = {alpha_text}, hf_verifix)",
        )
        say(f"pushed to {args.push_to_hub}: {url}")
