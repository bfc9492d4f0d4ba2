"""The model card's facts about a ``correct`` run, and the command line that reproduces it.

Local paths are named by their base names (the card is run from the folder holding the model and data, and never
publishes a path of this machine); Hub IDs are kept as given; secrets are scrubbed.

Example:
    >>> from hf_verifix.commands.cli import build_parser
    >>> args = build_parser().parse_args(["correct", "--model", "/home/me/runs/resnet18", "--dataset", "org/images",
    ...                                   "--alpha", "3e4", "--output-dir", "/tmp/out"])
    >>> loaded = LoadedModel(None, "timm", args.model, Path(args.model))  # only where it came from is read
    >>> train = LoadedData(None, "image", "label", source="org/images", is_hub=True)
    >>> card_info(args, loaded, train, None, None).base_model
    'resnet18'
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

from ..hub import LoadedData, LoadedModel, scrub_secrets
from ..reporting.model_card import CardInfo, shareable_name
from ..results import format_alpha
from ._options import PROG

__all__ = ["base_license", "card_info", "class_names_of", "default_output_dir", "reproduce_command"]


def default_output_dir(model: str) -> Path:
    """``<model name>-sap``: the output folder when ``--output-dir`` is not given.

    Example:
        >>> default_output_dir("runs/resnet18/"), default_output_dir("hf-hub:org/vit@main")
        (PosixPath('resnet18-sap'), PosixPath('vit-sap'))
    """
    name = Path(model.removeprefix("hf-hub:").split("@")[0].rstrip("/")).name or "model"
    return Path(f"{Path(name).stem}-sap")


def class_names_of(data: LoadedData) -> list[str] | None:
    """The split's class names when its label column is a ``ClassLabel`` (else the report uses ids).

    Example:
        >>> import datasets
        >>> features = datasets.Features({"x": datasets.Value("int64"), "y": datasets.ClassLabel(names=["a", "b"])})
        >>> class_names_of(LoadedData(datasets.Dataset.from_dict({"x": [0], "y": [1]}, features=features), "x", "y"))
        ['a', 'b']
    """
    feature = data.dataset.features.get(data.label_column)
    names = getattr(feature, "names", None)
    return [str(n) for n in names] if isinstance(names, list) else None


def _noisy_labels_text(args: argparse.Namespace) -> str | None:
    if args.noisy_labels:
        return f"from `{Path(args.noisy_labels).name}`"
    if args.noisy_label_column:
        return f"column `{args.noisy_label_column}`"
    return None


def card_info(
    args: argparse.Namespace,
    loaded: LoadedModel,
    train: LoadedData,
    evaluation: LoadedData | None,
    alphas: list[float] | None,
) -> CardInfo:
    """What the model card says about this run: base model, dataset, splits, labels and the command.

    Example:
        >>> from hf_verifix.commands.cli import build_parser
        >>> args = build_parser().parse_args(["correct", "--model", "org/vit", "--dataset", "org/images",
        ...                                   "--output-dir", "vit-sap", "--push-to-hub", "me/vit-sap"])
        >>> loaded = LoadedModel(None, "transformers", "org/vit", Path("."), repo_id="org/vit")
        >>> card = card_info(args, loaded, LoadedData(None, "image", "label", source="org/images", is_hub=True),
        ...                  None, [1e3, 1e4])
        >>> card.model_name, card.base_model, card.dataset
        ('vit-sap', 'org/vit', 'org/images')
    """
    output = Path(args.output_dir)
    return CardInfo(
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
        noisy_labels=_noisy_labels_text(args),
        command=reproduce_command(args, loaded, train, alphas),
        repo_id=args.push_to_hub,
        license=base_license(loaded),
        dataset_revision=getattr(args, "dataset_revision", None),
    )


def base_license(loaded: LoadedModel) -> str | None:
    """The base model's license: its model card's ``license`` metadata, else (for a model from the Hub) a timm
    model's ``pretrained_cfg`` license. A local timm folder's ``pretrained_cfg`` license is not used: a model trained
    from scratch keeps the license of the default pretrained weights there, which are not its weights.

    Example:
        >>> base_license(LoadedModel(None, "timm", "x", Path("/nonexistent")))  # no card, no model config
    """
    card = Path(loaded.path) / "README.md" if Path(loaded.path).is_dir() else None
    if card is not None and card.is_file():
        from huggingface_hub import ModelCard

        try:
            license_id = ModelCard.load(card).data.license
        except Exception:  # an unreadable card is no reason to fail the correction; the license is then unknown
            license_id = None
        if isinstance(license_id, str) and license_id:
            return license_id
    cfg = getattr(loaded.model, "pretrained_cfg", None) if loaded.repo_id is not None else None
    found = cfg.get("license") if isinstance(cfg, dict) else None
    return found if isinstance(found, str) and found else None


def _local(path: str) -> str:
    return shareable_name(path, is_hub=False)


def _model_and_data_flags(args: argparse.Namespace, loaded: LoadedModel, train: LoadedData) -> list[str]:
    model = args.model if loaded.repo_id is not None else shareable_name(args.model, False, "./model")
    parts = ["--model", model]
    if loaded.revision:
        parts += ["--revision", loaded.revision]
    if args.architecture:
        parts += ["--architecture", args.architecture]
    if args.trust_remote_code:
        parts.append("--trust-remote-code")
    parts += ["--dataset", shareable_name(args.dataset, train.is_hub, "./data"), "--split", args.split]
    if getattr(args, "dataset_revision", None):
        parts += ["--dataset-revision", args.dataset_revision]
    if args.eval_split:
        parts += ["--eval-split", args.eval_split]
    if args.eval_noisy_labels:
        parts += ["--eval-noisy-labels", _local(args.eval_noisy_labels)]
    parts += ["--image-column", train.image_column]
    label = train.reference_column if train.reference_column else train.label_column
    if label and (train.reference_column or not (args.noisy_labels or args.noisy_label_column)):
        parts += ["--label-column", label]
    if args.align_labels:
        parts.append("--align-labels")
    if args.noisy_labels:
        parts += ["--noisy-labels", _local(args.noisy_labels)]
    if args.noisy_label_column:
        parts += ["--noisy-label-column", args.noisy_label_column]
    if args.limit:
        parts += ["--limit", str(args.limit)]
    return parts


def _trusted_flags(args: argparse.Namespace) -> list[str]:
    if args.trusted:
        return ["--trusted", _local(args.trusted)]
    parts = ["--selector", args.selector]
    if args.selector_kwargs:
        parts += ["--selector-kwargs", json.dumps(args.selector_kwargs, sort_keys=True)]
    parts += ["--n-trusted", str(args.n_trusted)]
    if args.per_class:
        parts.append("--per-class")
    return parts


def _projection_flags(args: argparse.Namespace, alphas: list[float] | None) -> list[str]:
    if alphas is None:
        parts = ["--alpha", format_alpha(args.alpha)]
    else:
        parts = ["--alphas", ",".join(format_alpha(a) for a in alphas)]
    if args.recalibrate_batchnorm:
        parts.append("--recalibrate-batchnorm")
    if args.target_modules:
        parts += ["--target-modules", *args.target_modules]
    if args.exclude_modules:
        parts += ["--exclude-modules", *args.exclude_modules]
    if args.on_uncorrectable != "error":
        parts += ["--on-uncorrectable", args.on_uncorrectable]
    return parts


def reproduce_command(
    args: argparse.Namespace, loaded: LoadedModel, train: LoadedData, alphas: list[float] | None
) -> str:
    """The ``hf-verifix correct`` command of this run, for the card: local paths by their base names, Hub IDs as
    given, no secrets; ``alphas`` is the searched grid (None: ``--alpha`` was applied).

    Example:
        >>> from hf_verifix.commands.cli import build_parser
        >>> args = build_parser().parse_args(["correct", "--model", "/home/me/runs/resnet18", "--dataset",
        ...                                   "org/images", "--alpha", "3e4", "--output-dir", "/tmp/out"])
        >>> loaded = LoadedModel(None, "timm", args.model, Path(args.model))
        >>> print(reproduce_command(args, loaded, LoadedData(None, "image", "label", source="org/images",
        ...                                                  is_hub=True), None))  # doctest: +NORMALIZE_WHITESPACE
        hf-verifix correct --model resnet18 --dataset org/images --split train --image-column image
        --label-column label --selector loss --n-trusted 1000 --alpha 3e4 --batch-size 64 --seed 0 --output-dir out
    """
    output = shareable_name(str(args.output_dir), False, "./output")
    parts = [
        PROG,
        "correct",
        *_model_and_data_flags(args, loaded, train),
        *_trusted_flags(args),
        *_projection_flags(args, alphas),
        *("--batch-size", str(args.batch_size), "--seed", str(args.seed), "--output-dir", output),
    ]
    return scrub_secrets(shlex.join(parts))
