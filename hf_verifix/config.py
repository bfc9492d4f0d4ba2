"""The configuration of a correction: one validated dataclass, saved and loaded as JSON."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

__all__ = ["CONFIG_NAME", "CorrectionConfig"]

CONFIG_NAME = "correction_config.json"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass
class CorrectionConfig:
    """Hyperparameters of a Scaled Activation Projection correction.

    Args:
        alpha: Scaling coefficient α of the importance scaling λᵢ = ασ̃ᵢ / ((α−1)σ̃ᵢ + 1). Larger keeps more of
            the trusted activation space; α → ∞ leaves weights on a full-rank space unchanged.
        alpha_grid: Candidates tried by :meth:`ProjectionCorrector.search_alpha` when it is given none.
        n_trusted: Number of trusted samples (the papers use 1000).
        selector: Name of the trusted-sample selector (``"loss"``: lowest cross-entropy under the given labels).
        per_class: Pick ``n_trusted // num_classes`` samples in each (noisy) class instead of globally.
        target_modules: Only correct layers whose qualified name matches one of these regular expressions
            (``re.fullmatch``); ``None`` targets every ``nn.Linear`` and ``nn.Conv2d``.
        exclude_modules: Never correct layers whose name matches one of these regular expressions
            (e.g. ``["fc"]`` to leave a timm ResNet's classifier alone).
        recalibrate_batchnorm: Re-estimate BatchNorm running statistics on the trusted samples after projecting.
        batch_size: Batch size of every pass over data.
        image_column: Image column of a ``datasets.Dataset`` (detected when ``None``).
        label_column: Label column of a ``datasets.Dataset`` (detected when ``None``).
        seed: Seed of every random choice (ties, class balancing).
        progress: Show tqdm progress bars on long passes.

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
    per_class: bool = field(default=False, metadata={"help": "Balance the trusted set across classes."})
    target_modules: list[str] | None = field(default=None, metadata={"help": "Regexes of layers to correct."})
    exclude_modules: list[str] | None = field(default=None, metadata={"help": "Regexes of layers to leave alone."})
    recalibrate_batchnorm: bool = field(default=False, metadata={"help": "Re-estimate BatchNorm statistics."})
    batch_size: int = field(default=64, metadata={"help": "Batch size of passes over data."})
    image_column: str | None = field(default=None, metadata={"help": "Image column (auto-detected if None)."})
    label_column: str | None = field(default=None, metadata={"help": "Label column (auto-detected if None)."})
    seed: int = field(default=0, metadata={"help": "Seed for every random choice."})
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})

    def __post_init__(self) -> None:
        self.alpha = _valid_alpha(self.alpha, "alpha")
        if isinstance(self.alpha_grid, (str, bytes)) or not hasattr(self.alpha_grid, "__iter__"):
            raise ConfigError(f"alpha_grid must be a sequence of numbers > 0, got {self.alpha_grid!r}")
        self.alpha_grid = tuple(_valid_alpha(a, "alpha_grid entry") for a in self.alpha_grid)
        if not self.alpha_grid:
            raise ConfigError("alpha_grid must hold at least one α, got an empty sequence")
        for name in ("n_trusted", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ConfigError(f"seed must be an integer, got {self.seed!r}")
        if not isinstance(self.selector, str) or not self.selector:
            raise ConfigError(f"selector must be a non-empty selector name such as 'loss', got {self.selector!r}")
        for name in ("per_class", "recalibrate_batchnorm", "progress"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be True or False, got {getattr(self, name)!r}")
        for name in ("target_modules", "exclude_modules"):
            setattr(self, name, _valid_patterns(getattr(self, name), name))
        for name in ("image_column", "label_column"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigError(f"{name} must be a column name or None, got {value!r}")

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

        Example:
            >>> CorrectionConfig.from_dict({"alpha": 1e5, "n_trusted": 500}).n_trusted
            500
        """
        if not isinstance(data, dict):
            raise ConfigError(f"a correction config must be a JSON object (dict), got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            warnings.warn(
                f"ignoring unknown CorrectionConfig keys {unknown}; known keys are {sorted(known)}",
                UserWarning,
                stacklevel=2,
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
        if target.is_dir():
            target = target / CONFIG_NAME
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, target)
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CorrectionConfig:
        """Read a configuration written by :meth:`save` (a file or the directory holding it).

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
        except json.JSONDecodeError as err:
            raise ConfigError(f"{str(source)!r} is not valid JSON ({err}); was it written by CorrectionConfig.save?")
        return cls.from_dict(data)


def _valid_alpha(value: Any, name: str) -> float:
    if not _is_number(value) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a finite number > 0 (e.g. 3e4), got {value!r}")
    return float(value)


def _valid_patterns(value: Any, name: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(p, str) for p in value):
        raise ConfigError(f"{name} must be a list of regular expressions or None, got {value!r}")
    return list(value)
