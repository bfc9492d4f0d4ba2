"""Tests for hf_verifix.noise: symmetric, pair, transition-matrix and hierarchical label noise, and add_label_noise."""

from __future__ import annotations

import datasets
import numpy as np
import pytest
import torch

from hf_verifix.noise import (
    NoisyLabels,
    add_label_noise,
    hierarchical_noise,
    pair_noise,
    symmetric_noise,
    transition_noise,
)

# ---------------------------------------------------------------------------------------------
# symmetric noise
# ---------------------------------------------------------------------------------------------


def _balanced_labels(n: int = 1000, k: int = 10) -> torch.Tensor:
    return torch.arange(n) % k


def test_symmetric_exact_flip_count_and_flipped_differ() -> None:
    clean = _balanced_labels()
    noisy = symmetric_noise(clean, rate=0.25, seed=0)
    assert isinstance(noisy, NoisyLabels)
    assert noisy.labels.dtype == torch.int64
    assert noisy.flipped.dtype == torch.bool
    assert noisy.labels.shape == clean.shape
    assert int(noisy.flipped.sum()) == 250
    assert noisy.num_flipped == 250
    assert noisy.rate == pytest.approx(0.25)
    assert torch.all(noisy.labels[noisy.flipped] != clean[noisy.flipped])
    assert torch.equal(noisy.labels[~noisy.flipped], clean[~noisy.flipped])
    assert int(noisy.labels.min()) >= 0
    assert int(noisy.labels.max()) < 10


def test_symmetric_does_not_modify_input() -> None:
    clean = _balanced_labels()
    before = clean.clone()
    symmetric_noise(clean, rate=0.5, seed=3)
    assert torch.equal(clean, before)


@pytest.mark.parametrize(("n", "rate", "expected"), [(1000, 0.0, 0), (7, 0.5, round(3.5)), (10, 0.33, 3), (3, 0.9, 3)])
def test_symmetric_count_is_round_rate_times_n(n: int, rate: float, expected: int) -> None:
    noisy = symmetric_noise(torch.arange(n) % 3, rate=rate, num_classes=3, seed=1)
    assert noisy.num_flipped == expected


def test_symmetric_accepts_list_numpy_tensor_identically() -> None:
    base = [i % 5 for i in range(200)]
    a = symmetric_noise(base, rate=0.3, seed=7)
    b = symmetric_noise(np.asarray(base, dtype=np.uint8), rate=0.3, seed=7)
    c = symmetric_noise(torch.tensor(base, dtype=torch.int32), rate=0.3, seed=7)
    assert torch.equal(a.labels, b.labels)
    assert torch.equal(a.labels, c.labels)
    assert torch.equal(a.flipped, c.flipped)


def test_symmetric_determinism_and_seed_dependence() -> None:
    clean = _balanced_labels()
    a = symmetric_noise(clean, rate=0.25, seed=123)
    b = symmetric_noise(clean, rate=0.25, seed=123)
    c = symmetric_noise(clean, rate=0.25, seed=124)
    assert torch.equal(a.labels, b.labels)
    assert torch.equal(a.flipped, b.flipped)
    assert not torch.equal(a.flipped, c.flipped)
    assert not torch.equal(a.labels, c.labels)


def test_symmetric_destinations_are_roughly_uniform_over_other_classes() -> None:
    clean = torch.zeros(20000, dtype=torch.int64)
    noisy = symmetric_noise(clean, rate=0.9, num_classes=4, seed=0)
    counts = torch.bincount(noisy.labels[noisy.flipped], minlength=4)
    assert counts[0] == 0
    # 18000 flips over 3 classes -> 6000 each; std ~ 63
    assert torch.all((counts[1:] - 6000).abs() < 400), counts


def test_symmetric_num_classes_larger_than_observed() -> None:
    noisy = symmetric_noise([0, 0, 0, 0], rate=0.5, num_classes=50, seed=0)
    assert noisy.num_flipped == 2
    assert int(noisy.labels.max()) < 50


# ---------------------------------------------------------------------------------------------
# pair noise
# ---------------------------------------------------------------------------------------------


def test_pair_noise_default_mapping_exact_per_class_counts() -> None:
    k = 10
    # unbalanced classes: class c has 20 * (c + 1) samples
    clean = torch.cat([torch.full((20 * (c + 1),), c) for c in range(k)])
    clean = clean[torch.randperm(clean.numel(), generator=torch.Generator().manual_seed(0))]
    rate = 0.3
    noisy = pair_noise(clean, rate=rate, seed=5)
    assert torch.equal(noisy.flipped, noisy.labels != clean)
    for c in range(k):
        members = clean == c
        flipped_c = noisy.flipped & members
        assert int(flipped_c.sum()) == round(rate * int(members.sum())), c
        assert torch.all(noisy.labels[flipped_c] == (c + 1) % k)
        assert torch.all(noisy.labels[members & ~noisy.flipped] == c)


def test_pair_noise_custom_mapping_leaves_other_classes_untouched() -> None:
    clean = torch.arange(400) % 4
    noisy = pair_noise(clean, rate=0.5, mapping={0: 2, 3: 1}, seed=0)
    assert int((noisy.flipped & (clean == 0)).sum()) == 50
    assert int((noisy.flipped & (clean == 3)).sum()) == 50
    assert not torch.any(noisy.flipped & ((clean == 1) | (clean == 2)))
    assert torch.all(noisy.labels[noisy.flipped & (clean == 0)] == 2)
    assert torch.all(noisy.labels[noisy.flipped & (clean == 3)] == 1)
    assert noisy.num_flipped == 100


def test_pair_noise_determinism() -> None:
    clean = _balanced_labels()
    assert torch.equal(pair_noise(clean, 0.4, seed=1).labels, pair_noise(clean, 0.4, seed=1).labels)
    assert not torch.equal(pair_noise(clean, 0.4, seed=1).labels, pair_noise(clean, 0.4, seed=2).labels)


# ---------------------------------------------------------------------------------------------
# transition-matrix noise
# ---------------------------------------------------------------------------------------------


def test_transition_identity_flips_nothing() -> None:
    clean = _balanced_labels(500, 5)
    noisy = transition_noise(clean, torch.eye(5), seed=0)
    assert noisy.num_flipped == 0
    assert torch.equal(noisy.labels, clean)


def test_transition_permutation_is_deterministic_map() -> None:
    perm = np.eye(3)[[1, 2, 0]]  # 0->1, 1->2, 2->0
    noisy = transition_noise([0, 1, 2, 2], perm.tolist())
    assert noisy.labels.tolist() == [1, 2, 0, 0]
    assert noisy.flipped.all()


def test_transition_empirical_rate() -> None:
    k, eps = 4, 0.3
    matrix = np.full((k, k), eps / (k - 1))
    np.fill_diagonal(matrix, 1 - eps)
    clean = _balanced_labels(40000, k)
    noisy = transition_noise(clean, matrix, seed=11)
    assert noisy.rate == pytest.approx(eps, abs=0.015)
    # destinations of class-0 flips spread evenly over the 3 other classes
    counts = torch.bincount(noisy.labels[(clean == 0) & noisy.flipped], minlength=k).double()
    assert counts[0] == 0
    assert torch.allclose(counts[1:] / counts[1:].sum(), torch.full((3,), 1 / 3, dtype=torch.float64), atol=0.03)
    again = transition_noise(clean, matrix, seed=11)
    assert torch.equal(noisy.labels, again.labels)


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------


GROUPS = [[0, 1, 2], [3, 4], [5, 6, 7, 8, 9]]


def test_hierarchical_exact_count_and_flips_stay_in_their_superclass() -> None:
    clean = torch.arange(10).repeat(100)
    noisy = hierarchical_noise(clean, 0.3, superclasses=GROUPS, seed=3)
    group = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 2])
    assert noisy.num_flipped == 300
    assert torch.equal(noisy.flipped, noisy.labels != clean)  # every chosen sample really changes class
    assert torch.equal(group[noisy.labels], group[clean])
    assert torch.equal(noisy.labels, hierarchical_noise(clean, 0.3, superclasses=GROUPS, seed=3).labels)
    assert not torch.equal(noisy.labels, hierarchical_noise(clean, 0.3, superclasses=GROUPS, seed=4).labels)


def test_hierarchical_destinations_are_uniform_over_the_other_classes_of_the_group() -> None:
    clean = torch.zeros(20_000, dtype=torch.long)  # class 0 of group [0, 1, 2]: flips go to 1 or 2, half each
    noisy = hierarchical_noise(clean, 0.5, superclasses=GROUPS, seed=0)
    counts = torch.bincount(noisy.labels[noisy.flipped], minlength=10)
    assert counts[3:].sum() == 0 and counts[0] == 0
    assert abs(int(counts[1]) - 5000) < 250  # binomial sd ≈ 71


def test_hierarchical_validation_errors() -> None:
    with pytest.raises(ValueError, match="fewer than 2 classes"):
        hierarchical_noise([0, 1, 2], 0.2, superclasses=[[0, 1], [2]])
    with pytest.raises(ValueError, match="disjoint"):
        hierarchical_noise([0, 1, 2], 0.2, superclasses=[[0, 1], [1, 2]])
    with pytest.raises(ValueError, match=r"labels \[3\] belong to no superclass"):
        hierarchical_noise([0, 1, 2, 3], 0.2, superclasses=[[0, 1, 2]])
    with pytest.raises(TypeError, match="sequence of class groups"):
        hierarchical_noise([0, 1], 0.2, superclasses="01")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs the class groups"):
        add_label_noise(datasets.Dataset.from_dict({"label": [0, 1]}), kind="hierarchical", rate=0.5)


def test_add_label_noise_hierarchical_records_the_flips() -> None:
    ds = datasets.Dataset.from_dict({"label": [0, 1, 2, 3, 4] * 20})
    noisy = add_label_noise(ds, kind="hierarchical", rate=0.2, superclasses=[[0, 1], [2, 3, 4]], seed=1)
    assert sum(noisy["is_noisy"]) == 20
    expected = hierarchical_noise(ds["label"], 0.2, superclasses=[[0, 1], [2, 3, 4]], seed=1)
    assert noisy["label"] == expected.labels.tolist() and noisy["clean_label"] == ds["label"]


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5, float("nan")])
def test_rate_out_of_range(rate: float) -> None:
    with pytest.raises(ValueError, match=r"rate must be in \[0, 1\), got"):
        symmetric_noise([0, 1, 2], rate=rate)
    with pytest.raises(ValueError, match=r"rate must be in \[0, 1\)"):
        pair_noise([0, 1, 2], rate=rate)


def test_rate_wrong_type() -> None:
    with pytest.raises(TypeError, match="rate must be a float"):
        symmetric_noise([0, 1], rate="0.2")  # type: ignore[arg-type]


def test_labels_validation() -> None:
    with pytest.raises(ValueError, match=r"labels must be 1-D.*got shape \(2, 2\)"):
        symmetric_noise([[0, 1], [1, 0]], rate=0.1)
    with pytest.raises(ValueError, match="labels must be >= 0, got minimum -1"):
        symmetric_noise([0, -1, 2], rate=0.1)
    with pytest.raises(TypeError, match="integer dtype"):
        symmetric_noise(torch.tensor([0.0, 1.0]), rate=0.1)
    with pytest.raises(TypeError, match="labels must be a list"):
        symmetric_noise("0123", rate=0.1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"labels must be < num_classes=3, got a label 5"):
        symmetric_noise([0, 5], rate=0.1, num_classes=3)


def test_num_classes_validation() -> None:
    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        symmetric_noise([0, 0, 0], rate=0.5)
    with pytest.raises(ValueError, match=r"num_classes must be >= 2.*got 1\."):
        pair_noise([0, 0], rate=0.5, num_classes=1)


def test_pair_mapping_validation() -> None:
    with pytest.raises(ValueError, match="maps class 1 to itself"):
        pair_noise([0, 1, 2], rate=0.5, mapping={1: 1})
    with pytest.raises(ValueError, match=r"mapping value 7 is out of range.*\[0, 3\)"):
        pair_noise([0, 1, 2], rate=0.5, mapping={0: 7})
    with pytest.raises(TypeError, match="mapping must be a dict"):
        pair_noise([0, 1, 2], rate=0.5, mapping=[(0, 1)])  # type: ignore[arg-type]


def test_transition_matrix_validation() -> None:
    with pytest.raises(ValueError, match=r"square.*got shape \(2, 3\)"):
        transition_noise([0, 1], np.ones((2, 3)) / 3)
    with pytest.raises(ValueError, match="non-negative"):
        transition_noise([0, 1], [[1.5, -0.5], [0.0, 1.0]])
    with pytest.raises(ValueError, match=r"row-stochastic.*row 1 sums to 0\.9"):
        transition_noise([0, 1], [[1.0, 0.0], [0.5, 0.4]])
    with pytest.raises(ValueError, match=r"labels must be < K=2"):
        transition_noise([0, 2], np.eye(2))
    # within tolerance is accepted
    transition_noise([0, 1], [[1.0 - 1e-8, 0.0], [0.0, 1.0]])


# ---------------------------------------------------------------------------------------------
# add_label_noise on a datasets.Dataset
# ---------------------------------------------------------------------------------------------


def _small_dataset(n: int = 200, k: int = 4) -> datasets.Dataset:
    features = datasets.Features(
        {"x": datasets.Value("int64"), "label": datasets.ClassLabel(names=[f"c{i}" for i in range(k)])}
    )
    return datasets.Dataset.from_dict({"x": list(range(n)), "label": [i % k for i in range(n)]}, features=features)


def test_add_label_noise_symmetric() -> None:
    ds = _small_dataset()
    out = add_label_noise(ds, kind="symmetric", rate=0.25, seed=0)
    assert out.column_names == ["x", "label", "clean_label", "is_noisy"]
    assert isinstance(out.features["label"], datasets.ClassLabel)
    assert out.features["label"].names == ds.features["label"].names
    assert out.features["is_noisy"] == datasets.Value("bool")
    clean = np.asarray(out["clean_label"])
    noisy = np.asarray(out["label"])
    is_noisy = np.asarray(out["is_noisy"])
    np.testing.assert_array_equal(clean, np.asarray(ds["label"]))
    np.testing.assert_array_equal(np.asarray(out["x"]), np.arange(200))
    assert is_noisy.sum() == 50
    np.testing.assert_array_equal(is_noisy, noisy != clean)
    # same as the underlying function
    expected = symmetric_noise(clean, rate=0.25, num_classes=4, seed=0)
    np.testing.assert_array_equal(noisy, expected.labels.numpy())
    # the input is untouched
    assert ds.column_names == ["x", "label"]


def test_add_label_noise_pair_and_transition_and_custom_column() -> None:
    ds = _small_dataset().rename_column("label", "y")
    out = add_label_noise(ds, kind="pair", rate=0.5, label_column="y", seed=1, mapping={0: 3})
    clean, noisy = np.asarray(out["clean_label"]), np.asarray(out["y"])
    assert np.asarray(out["is_noisy"]).sum() == 25
    assert (noisy[clean == 0] == 3).sum() == 25
    assert (noisy[clean != 0] == clean[clean != 0]).all()

    out_t = add_label_noise(ds, kind="transition", label_column="y", matrix=np.eye(4))
    assert not np.asarray(out_t["is_noisy"]).any()


def test_add_label_noise_errors() -> None:
    ds = _small_dataset()
    with pytest.raises(ValueError, match="kind must be one of"):
        add_label_noise(ds, kind="bogus")
    with pytest.raises(ValueError, match=r"label_column 'target' is not a column.*available columns"):
        add_label_noise(ds, label_column="target")
    with pytest.raises(ValueError, match="needs a transition matrix"):
        add_label_noise(ds, kind="transition")
    with pytest.raises(ValueError, match="already has a 'clean_label' column"):
        add_label_noise(add_label_noise(ds), rate=0.1)
    with pytest.raises(TypeError, match=r"must be a datasets\.Dataset, got list"):
        add_label_noise([0, 1, 2])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"rate must be in \[0, 1\)"):
        add_label_noise(ds, rate=1.0)
