"""Peak memory of ProjectionCorrector.fit on one wide Linear layer, against the size of its float64 Gram.

Each measurement runs in a fresh process (peak RSS from getrusage).
Run: `.venv/bin/python benchmarks/wide_layer_memory.py` (options: --width 8192 --rows 512).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = """
import resource, sys, time, torch
from torch.utils.data import TensorDataset
from hf_verifix import CorrectionConfig, ProjectionCorrector
width, rows = int(sys.argv[1]), int(sys.argv[2])
torch.manual_seed(0)
model = torch.nn.Linear(width, 10)
data = TensorDataset(torch.randn(rows, width), torch.arange(rows) % 10)
import gc; gc.collect()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
start = time.perf_counter()
# solver="eigh": this script measures the eigendecomposition's kept directions
config = CorrectionConfig(progress=False, batch_size=256, solver="eigh")
corrector = ProjectionCorrector(model, config).fit(data, trusted_indices=range(rows))
fit_s = time.perf_counter() - start
corrector.apply(3e4)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
kept = next(iter(corrector.projections.values())).eigenvectors.shape[-1]
print(__import__("json").dumps({"before": before, "peak": peak, "fit_s": fit_s, "kept": kept}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=8192)
    parser.add_argument("--rows", type=int, default=512)
    args = parser.parse_args()
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(args.width), str(args.rows)], capture_output=True, text=True, check=True
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    gram = args.width**2 * 8
    growth = result["peak"] - result["before"]
    print(f"Linear({args.width}, 10), {args.rows} trusted rows: Gram {gram / 2**30:.2f} GiB")
    print(f"  peak RSS growth during fit+apply: {growth / 2**30:.2f} GiB = {growth / gram:.2f} x the Gram")
    print(f"  directions kept by the update: {result['kept']} (rank <= {args.rows}); fit {result['fit_s']:.1f} s")


if __name__ == "__main__":
    main()
