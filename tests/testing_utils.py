"""Helpers shared by the test files: a free loopback port and the real 2-process `accelerate launch` command."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

# Words gloo/c10d print when the rendezvous port was taken between free_port() and the launch.
_PORT_TAKEN = ("EADDRINUSE", "address already in use", "Address already in use")


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago (no test uses a fixed port)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def launch_command(arguments: Sequence[str], processes: int = 2) -> list[str]:
    """Return ``accelerate launch`` with ``processes`` real CPU processes (gloo) running ``arguments``.

    ``--cpu`` would silently run ONE process; ``--multi_gpu`` with ``ACCELERATE_USE_CPU=1`` (see ``launch_env``)
    starts real gloo processes on the CPU.
    """
    return [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(free_port()), *arguments,
    ]  # fmt: skip


def launch_env(**extra: str) -> dict[str, str]:
    """Return the environment for ``launch_command``: CPU processes, one thread each."""
    return {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", **extra}


def run_launched(
    arguments: Sequence[str], processes: int = 2, timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``arguments`` under ``accelerate launch``; once more on a new port if another program took the first."""
    for attempt in range(2):
        done = subprocess.run(
            launch_command(arguments, processes), env=env or launch_env(), capture_output=True, text=True,
            timeout=timeout,
        )  # fmt: skip
        if done.returncode == 0 or attempt or not any(word in done.stderr for word in _PORT_TAKEN):
            return done
    raise AssertionError("unreachable")


def write_image_folder(root: Path, classes: int, per_class: dict[str, int]) -> None:
    """Write an image folder ``root/<split>/class<k>/<i>.png`` of seeded 32×32 RGB images, brighter per class."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in per_class.items():
        for label in range(classes):
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 90, (32, 32, 3)) + 70 * label
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i}.png")
