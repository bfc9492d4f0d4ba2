"""How fast the passes read a ``datasets.Dataset``: hf_verifix's reader vs ``datasets``' NumPy formatting.

Every pass (selection scoring, Gram collection, α search) reads the data through ``as_source(...).batches()``. A
``pixel_values`` column made with ``dataset.map(image_processor)`` is stored as nested lists of floats; read with
``with_format("numpy")`` (what hf_verifix did before) each row's lists are converted one by one. hf_verifix now
reads such a column from Arrow, one flat buffer per batch. This script times, per image size:

* ``datasets numpy rows``: ``dataset.with_format("numpy")[i]`` for every row (the old reader's cost),
* ``hf_verifix batches``: ``as_source(dataset, model).batches()`` end to end (DataLoader and collation included),
* ``Image column``: the same images stored as PNG in an ``Image`` column, decoded by PIL (for scale),

each after one untimed warm-up pass,

and checks that the tensors hf_verifix yields equal the NumPy-formatted rows bit for bit.

Run (2 minutes):

    .venv/bin/python benchmarks/data_reading.py
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import datasets
import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision.transforms import ToTensor

from hf_verifix.data.source import as_source

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[28, 64, 224], help="image side lengths")
    parser.add_argument("--rows", type=int, default=512, help="rows per dataset")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "data_reading.json")
    return parser.parse_args()


def seconds_per_row(run, rows: int) -> float:
    start = time.perf_counter()
    run()
    return (time.perf_counter() - start) / rows


def measure(size: int, rows: int, batch_size: int) -> dict[str, float | bool | int]:
    rng = np.random.default_rng(size)
    pixels = rng.integers(0, 256, (rows, size, size, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, rows).tolist()
    # What a map() over an image processor stores: normalised float32 CHW values as nested lists.
    normalised = ((pixels.astype(np.float32) / 255.0 - 0.5) / 0.5).transpose(0, 3, 1, 2)
    arrays = datasets.Dataset.from_dict({"pixel_values": list(normalised), "labels": labels})
    images = datasets.Dataset.from_dict(
        {"image": [Image.fromarray(p) for p in pixels], "label": labels},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=10)}),
    )
    model = nn.Conv2d(3, 4, 3)
    numpy_rows = arrays.with_format("numpy")
    old = seconds_per_row(lambda: [numpy_rows[i]["pixel_values"] for i in range(rows)], rows)
    source = as_source(arrays, model, batch_size=batch_size)
    list(source.batches())  # warm-up: the first pass pays for imports and Arrow's first allocations
    new = seconds_per_row(lambda: list(source.batches()), rows)
    read = torch.cat([batch.inputs for batch in source.batches()])
    expected = torch.from_numpy(np.stack([numpy_rows[i]["pixel_values"] for i in range(rows)]))
    image_source = as_source(images, model, batch_size=batch_size, transform=ToTensor())
    list(image_source.batches())
    image = seconds_per_row(lambda: list(image_source.batches()), rows)
    return {
        "size": size,
        "rows": rows,
        "datasets_numpy_rows_ms": old * 1e3,
        "hf_verifix_batches_ms": new * 1e3,
        "image_column_ms": image * 1e3,
        "speedup": old / new,
        "bit_identical": bool(torch.equal(read, expected)),
    }


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    results = [measure(size, args.rows, args.batch_size) for size in args.sizes]
    print("| image size | datasets NumPy rows | hf_verifix batches | speed-up | Image column (PNG) | equal |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['size']}×{r['size']}×3 | {r['datasets_numpy_rows_ms']:.2f} ms/row | "
            f"{r['hf_verifix_batches_ms']:.3f} ms/row | {r['speedup']:.0f}× | {r['image_column_ms']:.2f} ms/row | "
            f"{'yes' if r['bit_identical'] else 'NO'} |"
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    meta = {"machine": platform.machine(), "threads": args.threads, "batch_size": args.batch_size}
    args.output.write_text(json.dumps({"settings": meta, "results": results}, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
