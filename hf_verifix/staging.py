"""Writing a set of output files so that an interruption never leaves a half-written one."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["deferred_sigint", "staged_directory"]


@contextmanager
def deferred_sigint() -> Iterator[None]:
    """Hold back Ctrl-C (SIGINT) for the duration of the block, then deliver it.

    A SIGINT received inside the block is re-raised as soon as it ends (as ``KeyboardInterrupt`` under Python's
    default handler), so a short critical section (moving finished files into place, removing a staging folder)
    is never cut in half. Outside the main thread, where handlers cannot be installed, the block runs unprotected.

    Example:
        >>> with deferred_sigint():
        ...     done = True
        >>> done
        True
    """
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or previous is None:  # None: set outside Python
        yield
        return
    received: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            signal.raise_signal(signal.SIGINT)


def _new_staging_folder(destination: Path) -> Path:
    """An empty folder beside ``destination`` with the permissions a plain ``mkdir`` gives (the umask's)."""
    while True:
        staging = destination.parent / f".{destination.name}.verifix-{secrets.token_hex(4)}"
        try:
            staging.mkdir()
            return staging
        except FileExistsError:
            continue


def _move_files(staging: Path, destination: Path) -> None:
    for item in sorted(staging.rglob("*")):
        if item.is_file():
            final = destination / item.relative_to(staging)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(item, final)


@contextmanager
def staged_directory(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary folder next to ``target``; on success move what was written there into ``target``.

    The temporary folder (``.<name>.verifix-*``) is created beside ``target``, on the same file system. When
    ``target`` does not exist yet, the whole folder is renamed into place in one atomic step, so ``target`` either
    does not exist or holds every file; when it exists, each file is moved in with ``os.replace`` (atomic per file:
    a reader sees the old file or the complete new one), with Ctrl-C held back until every file is in place. If the
    block raises (``KeyboardInterrupt`` included), nothing is moved and ``target`` is left as it was; the temporary
    folder is removed either way.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp()) / "out"
        >>> with staged_directory(folder) as staging:
        ...     _ = (staging / "a.txt").write_text("done")
        >>> sorted(p.name for p in folder.iterdir()), sorted(p.name for p in folder.parent.iterdir())
        (['a.txt'], ['out'])
    """
    destination = Path(target)
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = _new_staging_folder(destination)
    try:
        yield staging
        with deferred_sigint():
            if not destination.exists():
                try:
                    os.rename(staging, destination)
                    return
                except OSError:  # created meanwhile by someone else: fall back to moving file by file
                    pass
            destination.mkdir(parents=True, exist_ok=True)
            _move_files(staging, destination)
    finally:
        with deferred_sigint():
            shutil.rmtree(staging, ignore_errors=True)
