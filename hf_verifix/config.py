"""The configuration of a correction: one validated dataclass, saved and loaded as JSON."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._validation import MAX_SEED, valid_int, valid_on_uncorrectable, valid_patterns
from ._validation import valid_alpha as _valid_alpha
from .errors import ConfigError, describe_value
from .results import CONFIG_NAME
from .utils.staging import atomic_write

__all__ = ["CONFIG_NAME", "CorrectionConfig", "available_devices", "unavailable_device"]


# torch.manual_seed accepts seeds up to 2**64 - 1; numpy's generators need non-negative seeds.


SOLVERS = ("auto", "cholesky", "eigh")
GRAM_PRECISIONS = ("float64", "float32")
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _outside_package_stacklevel() -> int:
    """The ``stacklevel`` that points a warning raised by the caller at the first frame outside hf_verifix.

    So a warning about the user's configuration names the user's line, whether they called ``from_dict``,
    ``load`` or ``ProjectionCorrector(..., **overrides)``.
    """
    frame = sys._getframe(1)
    level = 1
    while frame.f_back is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE_DIR):
        frame = frame.f_back
        level += 1
    return level


@dataclass
class CorrectionConfig:
    """Hyperparameters of a Scaled Activation Projection correction.

    Args:
        alpha: Scaling coefficient α of the importance scaling λᵢ = ασ̃ᵢ / ((α−1)σ̃ᵢ + 1). Larger keeps more of
            the trusted activation space; α → ∞ leaves weights on a full-rank space unchanged.
        alpha_grid: Candidates tried by :meth:`ProjectionCorrector.search_alpha` when it is given none.
        n_trusted: Number of trusted samples (the papers use 1000).
        selector: Name of the trusted-sample selector (``"loss"``: lowest cross-entropy under the given labels;
            ``hf_verifix.list_selectors()`` names all). To use a selector object, pass it to ``fit(selector=...)``.
        selector_kwargs: Keyword arguments for the named selector, JSON-serialisable (e.g. ``{"n": 10, "h": 1e-3}``
            for ``"curvature"``).
        per_class: Pick ``n_trusted // num_classes`` samples in each (noisy) class instead of globally.
        target_modules: Only correct layers whose qualified name matches one of these regular expressions
            (``re.fullmatch``); ``None`` targets every ``nn.Linear`` and ``nn.Conv2d``.
        exclude_modules: Never correct layers whose name matches one of these regular expressions
            (e.g. ``["fc"]`` to leave a timm ResNet's classifier alone).
        recalibrate_batchnorm: Re-estimate BatchNorm running statistics on the trusted samples after projecting.
        on_uncorrectable: What ``fit`` does when a targeted layer cannot be corrected exactly (its stored weight is
            not what its forward multiplies by, e.g. timm ``Conv2dSame``, ``padding_mode="reflect"``,
            ``nn.MultiheadAttention.out_proj``): ``"error"`` refuses the model before any work, listing every such
            layer with its reason; ``"skip"`` leaves them unchanged with a warning and corrects the others.
        batch_size: Batch size of every pass over data.
        image_column: Image column of a ``datasets.Dataset`` (detected when ``None``).
        label_column: Label column of a ``datasets.Dataset`` (detected when ``None``).
        seed: Seed of the selectors' random choices (e.g. curvature's Rademacher directions, random selection).
        progress: Show tqdm progress bars on long passes.
        statistics_device: Where the float64 Grams, their eigenvectors and W·U live (a torch device string such as
            ``"cpu"`` or ``"cuda:1"``); ``None`` is the model's device. ``"cpu"`` spares GPU memory at the cost of
            copying every activation row to the host.
        solver: How each α's projected weight is computed, all exact to round-off: ``"cholesky"`` solves
            α(I + (α−1)Ĝ)⁻¹ĜWᵀ once per α (about 1/20 of an eigendecomposition's cost for a wide layer);
            ``"eigh"`` decomposes each Gram once, then costs one product per α; ``"auto"`` solves, and switches a
            layer to its eigendecomposition once the α values asked for (e.g. a long ``alpha_grid``) make that
            cheaper. Reports read the spectrum from the eigenvalues alone.
        gram_precision: The dtype each chunk's Gram product is computed in before it is added into the float64
            Gram: ``"float64"``, or ``"float32"`` (about 2× faster on CPU, TF32 on GPUs where torch allows it; its
            agreement with float64 is measured in the README's scale section — check it on your model before
            relying on it at large α).
        max_rows_per_layer: Opt-in speed over exactness: keep about this many rows per layer (the same random
            output positions or tokens of every image, at least one per image, drawn from ``seed``; identical on any
            number of processes). ``None`` (the default) keeps every row: the exact Gram. Its error against the exact
            Gram is measured in the README's scale section.

    Example:
        >>> from hf_verifix import CorrectionConfig
        >>> config = CorrectionConfig(alpha=3e4, n_trusted=1000, selector="loss")
        >>> CorrectionConfig.from_dict(config.to_dict()) == config
        True
    """

    alpha: float = field(default=3e4, metadata={"help": "Scaling coefficient α (> 0)."})
    alpha_grid: tuple[float, ...] = field(
        default=(1e3, 3e3, 1e4, 3e4, 1e5, 3e5, 1e6), metadata={"help": "α candidates for search_alpha."}
    )
    n_trusted: int = field(default=1000, metadata={"help": "Number of trusted samples."})
    selector: str = field(default="loss", metadata={"help": "Trusted-sample selector name."})
    selector_kwargs: dict[str, Any] | None = field(
        default=None, metadata={"help": "Keyword arguments of the named selector (JSON-serialisable)."}
    )
    per_class: bool = field(default=False, metadata={"help": "Balance the trusted set across classes."})
    target_modules: list[str] | None = field(default=None, metadata={"help": "Regexes of layers to correct."})
    exclude_modules: list[str] | None = field(default=None, metadata={"help": "Regexes of layers to leave alone."})
    recalibrate_batchnorm: bool = field(default=False, metadata={"help": "Re-estimate BatchNorm statistics."})
    on_uncorrectable: str = field(
        default="error",
        metadata={"help": "'error' refuses a model with layers that cannot be corrected; 'skip' leaves them alone."},
    )
    batch_size: int = field(default=64, metadata={"help": "Batch size of passes over data."})
    image_column: str | None = field(default=None, metadata={"help": "Image column (auto-detected if None)."})
    label_column: str | None = field(default=None, metadata={"help": "Label column (auto-detected if None)."})
    seed: int = field(default=0, metadata={"help": "Seed for every random choice."})
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})
    statistics_device: str | None = field(
        default=None, metadata={"help": "Device of the Grams and projections (None: the model's device)."}
    )
    solver: str = field(
        default="auto", metadata={"help": "'cholesky', 'eigh', or 'auto' (whichever is cheaper for the α values)."}
    )
    gram_precision: str = field(
        default="float64", metadata={"help": "dtype of each chunk's Gram product: 'float64' or 'float32'."}
    )
    max_rows_per_layer: int | None = field(
        default=None, metadata={"help": "Opt-in row subsample per layer (None: every row, the exact Gram)."}
    )

    def __post_init__(self) -> None:
        self.alpha = _valid_alpha(self.alpha, "alpha")
        self.alpha_grid = _valid_alpha_grid(self.alpha_grid)
        self.n_trusted = valid_int(self.n_trusted, "n_trusted", low=1, example=1000)
        self.batch_size = valid_int(self.batch_size, "batch_size", low=1, example=64)
        self.seed = valid_int(self.seed, "seed", low=0, high=MAX_SEED, example=0)
        if not isinstance(self.selector, str) or not self.selector:
            raise ConfigError(
                f"selector must be the non-empty name of a registered selector (e.g. 'loss'; see "
                f"hf_verifix.list_selectors()), got {describe_value(self.selector)}"
            )
        self.selector_kwargs = _valid_selector_kwargs(self.selector_kwargs)
        for name in ("per_class", "recalibrate_batchnorm", "progress"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise ConfigError(f"{name} must be True or False, got {describe_value(value)}; pass a bool")
        self.target_modules = valid_patterns(self.target_modules, "target_modules")
        if self.target_modules == []:
            raise ConfigError(
                "target_modules=[] matches no layer, so nothing would be corrected; pass None to target every "
                "nn.Linear/nn.Conv2d layer, or a list of regular expressions such as ['layer4\\..*', 'fc']"
            )
        self.exclude_modules = valid_patterns(self.exclude_modules, "exclude_modules")
        self.on_uncorrectable = valid_on_uncorrectable(self.on_uncorrectable)
        self.statistics_device = _valid_device(self.statistics_device)
        self.solver = _valid_choice(self.solver, "solver", SOLVERS)
        self.gram_precision = _valid_choice(self.gram_precision, "gram_precision", GRAM_PRECISIONS)
        if self.max_rows_per_layer is not None:
            self.max_rows_per_layer = valid_int(self.max_rows_per_layer, "max_rows_per_layer", low=1, example=50_000)
        for name in ("image_column", "label_column"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigError(
                    f"{name} must be a column name of the dataset (a non-empty str) or None to detect it, "
                    f"got {describe_value(value)}"
                )

    def to_dict(self) -> dict[str, Any]:
        """Return the configuration as a JSON-serialisable dict.

        Example:
            >>> CorrectionConfig(alpha=1e4).to_dict()["alpha"]
            10000.0
        """
        data = dataclasses.asdict(self)
        data["alpha_grid"] = list(self.alpha_grid)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CorrectionConfig:
        """Build a configuration from a dict; unknown keys are ignored with a warning.

        Raises:
            ConfigError: ``data`` is not a dict, or a value is of the wrong type or out of range.

        Example:
            >>> CorrectionConfig.from_dict({"alpha": 1e5, "n_trusted": 500}).n_trusted
            500
        """
        if not isinstance(data, dict):
            raise ConfigError(
                f"a correction config must be a dict (a JSON object) of field values, got {type(data).__name__}; "
                "build one with CorrectionConfig(...).to_dict()"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted((k for k in data if k not in known), key=repr)
        if unknown:
            warnings.warn(
                f"ignoring unknown CorrectionConfig keys {unknown}; known keys are {sorted(known)}",
                UserWarning,
                stacklevel=_outside_package_stacklevel(),
            )
        kwargs = {k: v for k, v in data.items() if k in known}
        if isinstance(kwargs.get("alpha_grid"), list):
            kwargs["alpha_grid"] = tuple(kwargs["alpha_grid"])
        return cls(**kwargs)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the configuration as JSON to ``path`` (a file, or a directory that gets ``correction_config.json``).

        Example:
            >>> import tempfile
            >>> path = CorrectionConfig().save(tempfile.mkdtemp())
            >>> path.name
            'correction_config.json'
        """
        target = Path(path)
        if target.is_dir() or target.suffix.lower() != ".json":
            target = target / CONFIG_NAME
        return atomic_write(target, json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CorrectionConfig:
        """Read a configuration written by :meth:`save` (a file or the directory holding it).

        Raises:
            FileNotFoundError: No file at ``path`` (nor ``correction_config.json`` in it).
            ConfigError: The file is not UTF-8 JSON, or holds an invalid configuration (the message names the file).

        Example:
            >>> import tempfile
            >>> folder = tempfile.mkdtemp()
            >>> _ = CorrectionConfig(alpha=5e4).save(folder)
            >>> CorrectionConfig.load(folder).alpha
            50000.0
        """
        source = Path(path)
        if source.is_dir():
            source = source / CONFIG_NAME
        if not source.is_file():
            raise FileNotFoundError(f"no correction config at {str(source)!r}; write one with CorrectionConfig.save")
        try:
            data = json.loads(source.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(
                f"{str(source)!r} is not a valid UTF-8 JSON file ({err}); was it written by CorrectionConfig.save? "
                "Fix or delete it"
            ) from err
        except RecursionError as err:  # json recurses once per nesting level: a hostile file exhausts the stack
            raise ConfigError(
                f"{str(source)!r} nests JSON arrays/objects too deeply to be read (a correction config is one flat "
                "object of field values); was it written by CorrectionConfig.save? Fix or delete it"
            ) from err
        try:
            return cls.from_dict(data)
        except ConfigError as err:
            raise ConfigError(f"invalid correction config {str(source)!r}: {err}") from err


def _valid_selector_kwargs(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ConfigError(
            f"selector_kwargs must be a dict of keyword arguments with str keys (e.g. {{'n': 10}}) or None, "
            f"got {describe_value(value)}"
        )
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ConfigError(
            f"selector_kwargs must be JSON-serialisable so the config can be saved ({err}); pass plain numbers, "
            "strings and lists, or give a selector object to fit(selector=...)"
        ) from err
    return dict(value)


def _valid_choice(value: Any, name: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ConfigError(
            f"{name} must be one of {', '.join(map(repr, allowed))}, got {describe_value(value)}; pass "
            f"{name}={allowed[0]!r} (the default) or leave it out"
        )
    return str(value)


def _valid_alpha_grid(value: Any) -> tuple[float, ...]:
    if isinstance(value, (str, bytes, dict, set, frozenset)) or not hasattr(value, "__iter__"):
        raise ConfigError(
            "alpha_grid must be a list or tuple of finite numbers > 0 (e.g. (1e3, 3e4, 1e6)), got "
            f"{describe_value(value)}"
        )
    grid = tuple(_valid_alpha(a, "every alpha_grid entry") for a in value)
    if not grid:
        raise ConfigError("alpha_grid must hold at least one alpha, got an empty sequence; pass e.g. (1e3, 3e4, 1e6)")
    return grid


def available_devices() -> list[str]:
    """The torch devices this machine can compute on: ``"cpu"``, then each GPU (``"cuda:0"``...), MPS or XPU.

    Example:
        >>> available_devices()[0]
        'cpu'
    """
    import torch

    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    xpu = getattr(torch, "xpu", None)
    if xpu is not None and xpu.is_available():
        devices += [f"xpu:{i}" for i in range(xpu.device_count())]
    return devices


def unavailable_device(device: str) -> str | None:
    """Why ``device`` (a string ``torch.device`` accepts) cannot be computed on here, or None when it can.

    ``"cuda"`` (no index) is available when any GPU is; ``"meta"`` holds no data, so it is never available.

    Example:
        >>> unavailable_device("cpu") is None
        True
        >>> unavailable_device("meta")
        "'meta' is not available on this machine (available: ['cpu'...])"
    """
    import torch

    parsed = torch.device(device)
    available = available_devices()
    index = 0 if parsed.index is None else parsed.index
    name = parsed.type if parsed.type in ("cpu", "mps") else f"{parsed.type}:{index}"
    if name in available:
        return None
    return f"{device!r} is not available on this machine (available: {available})"


def _valid_device(value: Any) -> str | None:
    """``value`` if it is None or a string ``torch.device`` accepts (``"cpu"``, ``"cuda:0"``), else a ConfigError.

    Whether this machine has that device is checked by ``ProjectionCorrector.fit`` before any data is read (not
    here, so a config saved on a GPU machine still loads elsewhere).
    """
    if value is None:
        return None
    import torch

    try:
        if not isinstance(value, str):
            raise TypeError
        torch.device(value)
    except (TypeError, RuntimeError) as err:
        raise ConfigError(
            f"statistics_device must be None (the model's device) or a torch device string such as 'cpu' or "
            f"'cuda:0', got {describe_value(value)}"
        ) from err
    return value
