"""Writing a set of output files so that an interruption never leaves a half-written one."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["staged_directory"]


@contextmanager
def staged_directory(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary folder inside ``target``; on success move every file written there into ``target``.

    Each file is moved with ``os.replace`` (atomic on one file system), so a reader sees either the old file or the
    complete new one. If the block raises, nothing is moved; the temporary folder is removed either way.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> with staged_directory(folder) as staging:
        ...     _ = (staging / "a.txt").write_text("done")
        >>> sorted(p.name for p in folder.iterdir())
        ['a.txt']
    """
    destination = Path(target)
    destination.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".verifix-", dir=destination))
    try:
        yield staging
        for item in sorted(staging.rglob("*")):
            if item.is_file():
                final = destination / item.relative_to(staging)
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(item, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
