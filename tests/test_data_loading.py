"""Loading data by path (hf_verifix.data.loading, through the hf_verifix.hub facade): splits, limits, noisy labels.

The image folder and its noisy label file are conftest.py's session-scoped ``work``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from hf_verifix.errors import DataError
from hf_verifix.hub import load_data

# Tiny models run as fast on one thread, and stay fast when other jobs share the CPU (conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")


def test_load_data_splits_limits_and_noisy_labels(work, tmp_path):
    cache = work["datasets_cache"]
    data = load_data(work["images"], "train", cache_dir=cache)
    assert (data.num_rows, data.image_column, data.label_column, data.reference_column) == (24, "image", "label", None)
    assert load_data(work["images"], "train[:50%]", cache_dir=cache).num_rows == 12

    limited = load_data(work["images"], "train", limit=10, seed=3, cache_dir=cache)
    again = load_data(work["images"], "train", limit=10, seed=3, cache_dir=cache)
    assert limited.rows == again.rows == sorted(limited.rows) and len(set(limited.rows)) == 10

    noisy = np.loadtxt(work["noisy"], dtype=np.int64)
    np.save(tmp_path / "noisy.npy", noisy)
    (tmp_path / "noisy.json").write_text(json.dumps({"labels": noisy.tolist()}))
    for source in (work["noisy"], tmp_path / "noisy.npy", tmp_path / "noisy.json"):
        loaded = load_data(work["images"], "train", noisy_labels=source, limit=10, seed=3, cache_dir=cache)
        assert (loaded.label_column, loaded.reference_column) == ("noisy_label", "label")
        assert loaded.labels().tolist() == noisy[limited.rows].tolist()
        assert loaded.labels("label").tolist() == data.labels()[limited.rows].tolist()

    with_column = data.dataset.add_column("given", noisy.tolist())
    from_column = load_data(with_column, noisy_label_column="given")
    assert from_column.label_column == "given" and from_column.labels().tolist() == noisy.tolist()

    (tmp_path / "short.txt").write_text("0\n1\n")
    with pytest.raises(DataError, match="holds 2 labels but split 'train' has 24 rows"):
        load_data(work["images"], "train", noisy_labels=tmp_path / "short.txt", cache_dir=cache)
    (tmp_path / "words.txt").write_text("cat\ndog\n")
    with pytest.raises(DataError, match="integer"):
        load_data(work["images"], "train", noisy_labels=tmp_path / "words.txt", cache_dir=cache)

    import datasets

    saved = tmp_path / "saved"
    datasets.DatasetDict({"train": data.dataset, "test": data.dataset.select(range(5))}).save_to_disk(saved)
    assert load_data(saved, "test").num_rows == 5
    assert load_data(saved, "train[-4:]").num_rows == 4
    with pytest.raises(DataError, match=r"its splits are \['test', 'train'\]"):
        load_data(saved, "validation")


def test_splits_of_saved_datasets_are_read_like_datasets_reads_them(tmp_path):
    import datasets

    folder = tmp_path / "saved"
    parts = {
        name: {"image": [[float(i), 1.0]] * n, "label": list(range(n))}
        for name, n, i in [("train", 20, 0), ("validation", 6, 1)]
    }
    datasets.DatasetDict({k: datasets.Dataset.from_dict(v) for k, v in parts.items()}).save_to_disk(folder)
    joined = load_data(folder, "train[:25%]+validation[-2:]").dataset
    assert joined["label"] == [0, 1, 2, 3, 4, 4, 5]  # 25 % of 20, then the last 2 of 6
    assert load_data(folder, "train[3:5]").dataset["label"] == [3, 4]
    assert load_data(folder, "validation").dataset.num_rows == 6
    with pytest.raises(DataError, match=r"Unknown split \"valid\".*its splits are \['train', 'validation'\]"):
        load_data(folder, "valid")
    with pytest.raises(DataError, match=r"cannot be read as split 'train\[:80%'.*'train\[:10%\]\+test\[:10%\]'"):
        load_data(folder, "train[:80%")
    alone = tmp_path / "alone"
    datasets.Dataset.from_dict({"image": [[0.0, 1.0]] * 10, "label": [0, 1] * 5}).save_to_disk(alone)
    assert load_data(alone, "whatever[:30%]").dataset.num_rows == 3  # one split on its own: only the slice counts
