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
