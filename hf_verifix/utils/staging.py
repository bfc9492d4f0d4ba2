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
from types import FrameType

__all__ = ["atomic_write", "deferred_sigint", "staged_directory", "terminate_as_exit"]

_HELD_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def deferred_sigint() -> Iterator[None]:
    """Hold back Ctrl-C (SIGINT) and SIGTERM for the duration of the block, then deliver them.

    A signal received inside the block is re-raised as soon as it ends (SIGINT as ``KeyboardInterrupt`` under
    Python's default handler), so a short critical section (moving finished files into place, removing a staging
    folder) is never cut in half. Outside the main thread, where handlers cannot be installed, the block runs
    unprotected.

    Example:
        >>> with deferred_sigint():
        ...     done = True
        >>> done
        True
    """
    previous = {signum: signal.getsignal(signum) for signum in _HELD_SIGNALS}
    # None: a handler set outside Python, which cannot be restored.
    if threading.current_thread() is not threading.main_thread() or None in previous.values():
        yield
        return
    received: list[int] = []
    for held in _HELD_SIGNALS:
        signal.signal(held, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        for held, handler in previous.items():
            signal.signal(held, handler)
        for signum in dict.fromkeys(received):
            signal.raise_signal(signum)


@contextmanager
def terminate_as_exit() -> Iterator[None]:
    """Within the block, SIGTERM raises ``SystemExit(143)`` (where it would kill the process outright).

    Python's default SIGTERM ends the process without running ``finally`` blocks, so a staging folder would be
    left behind; as an exception it unwinds like Ctrl-C, cleaning up, and the process still exits with status 143
    (128 + SIGTERM). A handler the program installed itself is left alone, as is every thread but the main one.

    Example:
        >>> with terminate_as_exit():
        ...     done = True
        >>> done
        True
    """
    previous = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is not threading.main_thread() or previous is not signal.SIG_DFL:
        yield
        return

    def _exit(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _staging_prefix(destination: Path) -> str:
    return f".{destination.name}.verifix-"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _remove_stale_staging(destination: Path) -> None:
    """Remove staging folders beside ``destination`` left by processes that no longer run (killed mid-save)."""
    prefix = _staging_prefix(destination)
    for folder in destination.parent.iterdir():  # not glob(): the name may hold '[' or '*'
        if not folder.name.startswith(prefix):
            continue
        pid = folder.name[len(prefix) :].split("-")[0]
        if folder.is_dir() and pid.isdigit() and int(pid) != os.getpid() and not _process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _new_staging_folder(destination: Path) -> Path:
    """An empty folder beside ``destination`` named after this process, with the umask's permissions."""
    while True:
        staging = destination.parent / f"{_staging_prefix(destination)}{os.getpid()}-{secrets.token_hex(4)}"
        try:
            staging.mkdir()
            return staging
        except FileExistsError:
            continue


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _staged_files(staging: Path) -> list[Path]:
    return [item for item in sorted(staging.rglob("*")) if item.is_file()]


def _readable_by_all(files: list[Path]) -> None:
    """Give every file the permissions a plain ``open()`` gives (some writers create theirs 0600)."""
    mode = 0o666 & ~_umask()
    for item in files:
        os.chmod(item, mode)


def _clashes(staging: Path, destination: Path, files: list[Path]) -> list[str]:
    return [str(item.relative_to(staging)) for item in files if (destination / item.relative_to(staging)).exists()]


def _move_files(staging: Path, destination: Path, files: list[Path]) -> None:
    for item in files:
        final = destination / item.relative_to(staging)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(item, final)


@contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` itself (flock on its descriptor: no lock file is left behind)."""
    try:
        import fcntl
    except ImportError:  # Windows: a lock file beside the folder's contents
        from filelock import FileLock

        with FileLock(str(folder / ".verifix.lock")):
            yield
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(descriptor, fcntl.LOCK_UN)
        os.close(descriptor)


@contextmanager
def staged_directory(target: str | os.PathLike[str], overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary folder next to ``target``; on success move what was written there into ``target``.

    The temporary folder (``.<name>.verifix-<pid>-*``) is created beside ``target``, on the same file system. When
    ``target`` does not exist yet, the whole folder is renamed into place in one atomic step, so ``target`` either
    does not exist or holds every file; when it exists, each file is moved in with ``os.replace`` (atomic per file:
    a reader sees the old file or the complete new one), with Ctrl-C and SIGTERM held back until every file is in
    place. The final step holds a lock on the folder that holds ``target``, so two runs writing to one folder
    never interleave their files.

    With ``overwrite=False`` no existing file is replaced: if ``target`` holds any file of the same name when the
    files are moved (written meanwhile by another run, say), nothing is moved and ``FileExistsError`` names them.
    If the block raises (``KeyboardInterrupt`` and, via SIGTERM, ``SystemExit`` included), nothing is moved and
    ``target`` is left as it was; the temporary folder is removed either way, and ones left by killed processes
    are removed the next time. Files get the umask's permissions (``0644`` under the usual umask).

    Raises:
        FileExistsError: ``overwrite`` is False and ``target`` already holds a file this block wrote, or ``target``
            is a file.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp()) / "out"
        >>> with staged_directory(folder) as staging:
        ...     _ = (staging / "a.txt").write_text("done")
        >>> sorted(p.name for p in folder.iterdir()), sorted(p.name for p in folder.parent.iterdir())
        (['a.txt'], ['out'])
    """
    destination = Path(target)
    if destination.exists() and not destination.is_dir():
        raise FileExistsError(f"{str(destination)!r} is a file, not a folder; choose another output folder")
    destination.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(destination)
    staging = _new_staging_folder(destination)
    try:
        with terminate_as_exit():
            yield staging
        files = _staged_files(staging)
        _readable_by_all(files)
        with _folder_lock(destination.parent), deferred_sigint():
            if not destination.exists():
                try:
                    os.rename(staging, destination)
                    return
                except OSError:  # created meanwhile by someone else: fall back to moving file by file
                    pass
            clashes = [] if overwrite else _clashes(staging, destination, files)
            if clashes:
                raise FileExistsError(
                    f"{str(destination)!r} already holds {', '.join(clashes[:8])}"
                    f"{' ...' if len(clashes) > 8 else ''} (written meanwhile?); nothing was replaced. Pass "
                    "overwrite=True to replace them, or choose another output folder"
                )
            destination.mkdir(parents=True, exist_ok=True)
            _move_files(staging, destination, files)
    finally:
        with deferred_sigint():
            shutil.rmtree(staging, ignore_errors=True)


def atomic_write(path: str | os.PathLike[str], data: str | bytes) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` through a temporary file renamed into place; return the path.

    An interruption leaves the old file or the new one, never half of one, and no temporary file behind. The parent
    folder is created when needed; the file gets the usual ``0666 & ~umask`` permissions.

    Example:
        >>> import tempfile
        >>> atomic_write(Path(tempfile.mkdtemp()) / "a" / "x.json", "{}").read_text()
        '{}'
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except BaseException:  # e.g. the path is a folder, or Ctrl-C: never leave the temporary file
        tmp.unlink(missing_ok=True)
        raise
    return target
