"""Progress bars that follow the ecosystem's switches: ``TQDM_DISABLE`` and ``HF_HUB_DISABLE_PROGRESS_BARS``."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from tqdm.auto import tqdm

from .distributed import is_main_process

__all__ = ["disable_ecosystem_progress_bars", "progress_bar", "progress_bars_disabled"]

T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on"}
_SWITCHES = ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS")


def progress_bars_disabled() -> bool:
    """Whether the environment turns progress bars off (``TQDM_DISABLE`` or ``HF_HUB_DISABLE_PROGRESS_BARS`` set true).

    Example:
        >>> import os
        >>> os.environ["TQDM_DISABLE"] = "1"
        >>> progress_bars_disabled()
        True
        >>> del os.environ["TQDM_DISABLE"]
    """
    return any(
        os.environ.get(name, "").strip().lower() in _TRUE for name in ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS")
    )


def progress_bar(iterable: Iterable[T], desc: str, enabled: bool, **kwargs: Any) -> Iterator[T]:
    """Iterate over ``iterable`` with a tqdm bar when ``enabled``, on the main process, unless the environment says no.

    Example:
        >>> list(progress_bar(range(3), "counting", enabled=False))
        [0, 1, 2]
    """
    show = enabled and is_main_process() and not progress_bars_disabled()
    return iter(tqdm(iterable, desc=desc, disable=not show, **kwargs))


def disable_ecosystem_progress_bars() -> None:
    """Turn off the Hub's, datasets' and transformers' own progress bars too (what ``--no-progress`` asks for).

    Example:
        >>> disable_ecosystem_progress_bars()
        >>> from huggingface_hub.utils import are_progress_bars_disabled
        >>> are_progress_bars_disabled()
        True
        >>> from huggingface_hub.utils import enable_progress_bars
        >>> enable_progress_bars()
    """
    import datasets
    import huggingface_hub.utils
    import transformers

    huggingface_hub.utils.disable_progress_bars()
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
