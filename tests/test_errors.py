"""Bad inputs: each raises the documented exception type with a message naming what was received and the fix.

Every case builds its own tiny model and data in memory, so the table runs in a few seconds on a CPU.
Cases marked ``xfail(strict=True)`` document library problems in files this test does not own; they start
failing (XPASS) once the problem is fixed, and the mark must then be removed.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from testing_utils import raises_exactly
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from hf_verifix import CorrectionConfig, ProjectionCorrector
from hf_verifix.data.fashion_mnist import load_fashion_mnist_arrays
from hf_verifix.data.mnist import load_mnist_arrays
from hf_verifix.errors import ConfigError, DataError, InputTypeError, LayerError, NumericalError, VerifixError
from hf_verifix.noise import symmetric_noise, transition_noise
from hf_verifix.statistics.layers import find_target_layers
from hf_verifix.statistics.rows import conv_rows

# ---------------------------------------------------------------------------------------------
# tiny models and data
# ---------------------------------------------------------------------------------------------


def mlp(classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, classes))


def cnn(classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 6 * 6, classes))


def vectors(n: int = 12, classes: int = 3, labels: Any = None) -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    y = torch.arange(n) % classes if labels is None else torch.as_tensor(labels)
    return TensorDataset(torch.randn(len(y), 4, generator=generator), y)


def reflect_cnn(classes: int = 3) -> nn.Module:
    model = cnn(classes)
    model[0].padding_mode = "reflect"
    return model


def images(n: int = 6, classes: int = 3) -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(n, 1, 8, 8, generator=generator), torch.arange(n) % classes)


def with_value(position: tuple[int, ...], value: float, n: int = 12) -> TensorDataset:
    data = vectors(n)
    x = data.tensors[0].clone()
    x[position] = value
    return TensorDataset(x, data.tensors[1])


def hf_vectors(n: int = 12) -> datasets.Dataset:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(n, 4, generator=generator)
    return datasets.Dataset.from_dict({"pixel_values": inputs.tolist(), "labels": [i % 3 for i in range(n)]})


def config(**overrides: Any) -> CorrectionConfig:
    return CorrectionConfig(**{"n_trusted": 4, "progress": False, **overrides})


def fit(model: nn.Module, data: Any, trusted: Any = None, **overrides: Any) -> ProjectionCorrector:
    return ProjectionCorrector(model, config(**overrides)).fit(data, trusted_indices=trusted)


def fitted() -> ProjectionCorrector:
    return fit(mlp(), vectors())


_PIXELS = [np.random.RandomState(i).randint(0, 255, (8, 8), dtype=np.uint8) for i in range(6)]


def hf_dataset(columns: dict[str, Any] | None = None, **features: Any) -> datasets.Dataset:
    """An in-memory ``datasets.Dataset`` of six 8x8 grayscale images labelled 0, 1, 2, 0, 1, 2 by default."""
    data: dict[str, Any] = {"image": [Image.fromarray(p) for p in _PIXELS], "label": [0, 1, 2, 0, 1, 2]}
    types: dict[str, Any] = {"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=3)}
    for name, value in (columns or {}).items():
        if value is None:
            data.pop(name)
            types.pop(name)
        else:
            data[name] = value
    types.update(features)
    return datasets.Dataset.from_dict(data, features=datasets.Features({k: types[k] for k in data}))


def meta_model() -> nn.Module:
    with torch.device("meta"):
        return mlp()


def xfail(reason: str, raises: type[BaseException] = AssertionError) -> pytest.MarkDecorator:
    return pytest.mark.xfail(strict=True, raises=raises, reason=reason)


# ---------------------------------------------------------------------------------------------
# the table: (call, exception type, message pattern)
# ---------------------------------------------------------------------------------------------

CASES = [
    # ---- layers
    pytest.param(
        lambda: fit(nn.Sequential(nn.ReLU(), nn.BatchNorm1d(4)), vectors()),
        LayerError,
        r"has no nn\.Linear or nn\.Conv2d layer.*\['BatchNorm1d', 'ReLU', 'Sequential'\].*pass a classifier",
        id="layers-only-relu-batchnorm",
    ),
    pytest.param(
        lambda: fit(mlp(), vectors(), target_modules=["fc"]),
        LayerError,
        r"target_modules=\['fc'\] matches none of the 2 Linear/Conv2d layers.*'0', '2'.*target_modules=None",
        id="layers-target-modules-match-nothing",
    ),
    pytest.param(
        lambda: fit(mlp(), vectors(), exclude_modules=[".*"]),
        LayerError,
        r"exclude_modules=\['\.\*'\].*'0': excluded by exclude_modules; '2': excluded.*Loosen exclude_modules",
        id="layers-exclude-modules-exclude-all",
    ),
    pytest.param(
        lambda: fit(reflect_cnn(), images()),
        LayerError,
        r"refusing to correct Sequential: 1 targeted layer\(s\) cannot be corrected exactly \('0': "
        r"padding_mode='reflect'.*Nothing was computed.*adding \['0'\] to exclude_modules.*on_uncorrectable='skip'",
        id="layers-uncorrectable-refused",
    ),
    pytest.param(
        lambda: config(on_uncorrectable="ignore"),
        ConfigError,
        r"on_uncorrectable must be 'error' .* or 'skip' .*got 'ignore' \(str\)",
        id="cfg-on-uncorrectable-unknown",
    ),
    pytest.param(
        lambda: find_target_layers(mlp(), on_uncorrectable="warn"),
        ConfigError,
        r"on_uncorrectable must be 'error'.*got 'warn' \(str\)",
        id="layers-on-uncorrectable-unknown",
    ),
    pytest.param(
        lambda: find_target_layers(mlp(), target_modules=["layer[1"]),
        ConfigError,
        r"target_modules entry 'layer\[1' is not a valid regular expression .*re\.escape",
        id="layers-invalid-regex",
    ),
    pytest.param(
        lambda: find_target_layers(mlp(), exclude_modules=[0]),
        ConfigError,
        r"exclude_modules must be a list of regular expressions .*got \[0\] \(list\)",
        id="layers-non-str-pattern",
    ),
    # ---- trusted-set size
    pytest.param(
        lambda: fit(mlp(), vectors(12), n_trusted=13),
        DataError,
        r"n_trusted=13 is larger than the data \(12 samples\); lower n_trusted",
        id="n-trusted-larger-than-data",
    ),
    pytest.param(
        lambda: fit(mlp(), vectors(labels=[0] * 10 + [1, 2]), n_trusted=9, per_class=True),
        DataError,
        r"n_trusted=9 over 3 classes needs 3 samples.*class 1: 1 < 3, class 2: 1 < 3.*at most 4 here.*"
        r"per_class=False",
        id="per-class-quota-larger-than-class",
    ),
    # ---- alpha in the config
    pytest.param(
        lambda: config(alpha=0), ConfigError, r"alpha must be a finite number > 0.*got 0 \(int\)", id="cfg-alpha-0"
    ),
    pytest.param(
        lambda: config(alpha=-3e4), ConfigError, r"alpha must be .*> 0.*got -30000\.0 \(float\)", id="cfg-alpha-neg"
    ),
    pytest.param(lambda: config(alpha=math.nan), ConfigError, r"alpha must be a finite.*got nan", id="cfg-alpha-nan"),
    pytest.param(lambda: config(alpha=math.inf), ConfigError, r"alpha must be a finite.*got inf", id="cfg-alpha-inf"),
    pytest.param(lambda: config(alpha=True), ConfigError, r"alpha must be .*got True \(bool\)", id="cfg-alpha-bool"),
    pytest.param(lambda: config(alpha="3e4"), ConfigError, r"alpha must be .*got '3e4' \(str\)", id="cfg-alpha-str"),
    # ---- alpha given to apply()
    pytest.param(
        lambda: fitted().apply(alpha=0), ConfigError, r"alpha must be a finite number > 0.*got 0", id="apply-alpha-0"
    ),
    pytest.param(
        lambda: fitted().apply(alpha=-1.0), ConfigError, r"alpha must be .*> 0.*got -1\.0", id="apply-alpha-neg"
    ),
    pytest.param(
        lambda: fitted().apply(alpha=math.nan), ConfigError, r"alpha must be .*got nan", id="apply-alpha-nan"
    ),
    pytest.param(
        lambda: fitted().apply(alpha=math.inf), ConfigError, r"alpha must be .*got inf", id="apply-alpha-inf"
    ),
    pytest.param(
        lambda: fitted().apply(alpha=-math.inf), ConfigError, r"alpha must be .*got -inf", id="apply-alpha-neginf"
    ),
    pytest.param(lambda: fitted().apply(alpha=True), ConfigError, r"alpha must be .*got True", id="apply-alpha-bool"),
    pytest.param(lambda: fitted().apply(alpha="1e4"), ConfigError, r"alpha must be .*got '1e4'", id="apply-alpha-str"),
    pytest.param(
        lambda: fitted().search_alpha(vectors(), alphas=[1e4, -1.0]),
        ConfigError,
        r"every entry of alphas must be a finite number > 0.*got -1\.0",
        id="search-alpha-negative-candidate",
    ),
    # ---- columns of a datasets.Dataset
    pytest.param(
        lambda: fit(cnn(), hf_dataset({"label": None})),
        DataError,
        r"cannot find the label column among \['image'\].*Pass label_column=",
        id="hf-missing-label-column",
    ),
    pytest.param(
        lambda: fit(cnn(), hf_dataset(), label_column="y"),
        DataError,
        r"label column 'y' is not in the dataset; its columns are \['image', 'label'\]\. Pass label_column=",
        id="hf-unknown-label-column",
    ),
    pytest.param(
        lambda: fit(cnn(), hf_dataset(), image_column="pixels"),
        DataError,
        r"image column 'pixels' is not in the dataset; its columns are \['image', 'label'\]\. Pass image_column=",
        id="hf-unknown-image-column",
    ),
    pytest.param(
        lambda: fit(cnn(), hf_dataset({"image": None, "brightness": [0.5] * 6}, brightness=datasets.Value("float32"))),
        DataError,
        r"cannot find the image column among \['label', 'brightness'\].*Pass image_column=",
        id="hf-no-detectable-image-column",
    ),
    pytest.param(
        lambda: fit(cnn(), hf_dataset().select([])),
        DataError,
        r"the dataset is empty; pass at least one labelled sample",
        id="hf-empty-dataset",
    ),
    # ---- labels
    pytest.param(
        lambda: fit(mlp(), vectors(labels=[0, 1, 3, 0, 1, 2])),
        DataError,
        r"labels must be in \[0, 3\) for a model with 3 outputs, got \[3\] \(samples \[2\]\); remap the labels",
        id="labels-too-large",
    ),
    pytest.param(
        lambda: fit(mlp(), vectors(labels=[0, 1, -1, 0, 1, 2])),
        DataError,
        r"labels must be in \[0, 3\).*got \[-1\] \(samples \[2\]\); remap the labels",
        id="labels-negative",
    ),
    pytest.param(
        lambda: fit(cnn(), hf_dataset({"label": [0, 1, 7, 0, 1, 2]}, label=datasets.Value("int64"))),
        DataError,
        r"labels must be in \[0, 3\).*got \[7\] \(samples \[2\]\)",
        id="hf-labels-too-large",
    ),
    pytest.param(
        lambda: fit(cnn(), hf_dataset({"label": list("abcabc")}, label=datasets.Value("string"))),
        DataError,
        r"labels must be integer class ids, got str 'a'; map class names to ids first",
        id="hf-string-labels",
    ),
    pytest.param(
        lambda: fit(cnn(), hf_dataset({"label": [0.0, 1.0, 2.0, 0.5, 1.0, 2.0]}, label=datasets.Value("float32"))),
        DataError,
        r"labels must be integer class ids, got float 0\.0",
        id="hf-float-labels",
    ),
    pytest.param(
        lambda: fit(mlp(), vectors(labels=[0.0, 1.0, 2.0, 0.0, 1.0, 2.0])),
        DataError,
        r"labels must be integer class ids, got a torch\.float32 tensor; cast them with \.long\(\)",
        id="float-label-tensor",
    ),
    pytest.param(
        lambda: fit(mlp(), vectors(labels=[True, False] * 3)),
        DataError,
        r"labels must be integer class ids, got a torch\.bool tensor",
        id="bool-label-tensor",
    ),
    # ---- non-finite inputs
    pytest.param(
        lambda: fit(mlp(), with_value((3, 1), math.nan)),
        NumericalError,
        r"the inputs of samples \[3\] contain NaN.*clean or drop those samples",
        id="nan-input-in-selection",
    ),
    pytest.param(
        lambda: fit(mlp(), with_value((4, 0), math.inf)),
        NumericalError,
        r"the inputs of samples \[4\] contain Inf",
        id="inf-input-in-selection",
    ),
    pytest.param(
        lambda: fit(mlp(), with_value((3, 1), math.nan), trusted=[0, 3]),
        NumericalError,
        r"the inputs of layer '0' contain NaN or Inf; check the data",
        id="nan-input-in-collection",
    ),
    pytest.param(
        lambda: fit(mlp(), with_value((4, 0), -math.inf), trusted=[4]),
        NumericalError,
        r"the inputs of layer '0' contain NaN or Inf",
        id="inf-input-in-collection",
    ),
    # ---- unbatched images reaching a Conv2d
    pytest.param(
        lambda: conv_rows(torch.randn(1, 8, 8), nn.Conv2d(1, 2, 3), "features.0"),
        DataError,
        r"expected a 4-D input \(batch, channels, height, width\) for Conv2d 'features\.0', got shape \(1, 8, 8\); "
        r"pass batched inputs",
        id="conv-rows-3d-input",
    ),
    pytest.param(
        lambda: fit(cnn(), TensorDataset(torch.randn(6, 8, 8), torch.arange(6) % 3), trusted=[0, 1, 2]),
        DataError,
        r"expected a 4-D input .* for Conv2d '0', got shape \(3, 8, 8\)",
        id="3d-images-in-collection",
    ),
    pytest.param(
        lambda: fit(cnn(), TensorDataset(torch.randn(6, 8, 8), torch.arange(6) % 3)),
        DataError,
        r"inputs of shape \(6, 8, 8\).*expects batched images of shape \(batch, channels, height, width\).*unsqueeze",
        id="3d-images-in-selection",
    ),
    pytest.param(
        lambda: fit(cnn(), DataLoader(images(), batch_size=None)),
        DataError,
        r"the DataLoader was built with batch_size=None, so it yields single samples instead of batches; build "
        r"it with a batch_size",
        id="dataloader-batch-size-none",
    ),
    pytest.param(
        lambda: fit(nn.Sequential(nn.Linear(4, 3), nn.Flatten(0)), vectors(6)),
        DataError,
        r"the model returned logits of shape \(18,\) for a batch of 6 samples .*expected \(6, num_classes\)",
        id="model-output-not-one-row-per-sample",
    ),
    # ---- empty data
    pytest.param(
        lambda: fit(mlp(), TensorDataset(torch.randn(0, 4), torch.zeros(0, dtype=torch.long))),
        DataError,
        r"the dataset is empty; pass at least one labelled sample",
        id="empty-tensor-dataset",
    ),
    # ---- trusted_indices
    pytest.param(
        lambda: fit(mlp(), vectors(12), trusted=[0, 12]),
        DataError,
        r"trusted_indices must lie in \[0, 12\), got values from 0 to 12",
        id="trusted-index-too-large",
    ),
    pytest.param(
        lambda: fit(mlp(), vectors(12), trusted=[-1, 2]),
        DataError,
        r"trusted_indices must lie in \[0, 12\), got values from -1 to 2",
        id="trusted-index-negative",
    ),
    pytest.param(
        lambda: fit(mlp(), vectors(), trusted=[1, 1, 2]),
        DataError,
        r"trusted_indices holds 1 duplicate\(s\); pass each index once",
        id="trusted-duplicated",
    ),
    pytest.param(
        lambda: fit(mlp(), vectors(), trusted=torch.tensor([], dtype=torch.long)),
        DataError,
        r"trusted_indices is empty; pass at least one sample index",
        id="trusted-empty-long-tensor",
    ),
    pytest.param(
        lambda: fit(mlp(), vectors(), trusted=[]),
        DataError,
        r"trusted_indices is empty",
        id="trusted-empty-list",
    ),
    pytest.param(
        lambda: fit(mlp(), vectors(), trusted=[0.0, 1.0]),
        DataError,
        r"trusted_indices must be a 1-D sequence of integer indices, got \(2,\) torch\.float32",
        id="trusted-float",
    ),
    pytest.param(
        lambda: fit(mlp(), vectors(), trusted=torch.tensor([[0, 1]])),
        DataError,
        r"trusted_indices must be a 1-D sequence of integer indices, got \(1, 2\)",
        id="trusted-2d",
    ),
    pytest.param(
        lambda: fit(mlp(), vectors(12), trusted=[True, False, True]),
        DataError,
        r"a boolean trusted mask must have one entry per sample \(12\), got 3",
        id="trusted-mask-wrong-length",
    ),
    pytest.param(
        lambda: fit(mlp(), vectors(), trusted="0,1"),
        DataError,
        r"trusted_indices",
        id="trusted-str",
    ),
    # ---- data containers
    pytest.param(
        lambda: fit(mlp(), DataLoader(vectors(), batch_size=4, shuffle=True)),
        DataError,
        r"the DataLoader uses a RandomSampler.*build it with shuffle=False",
        id="shuffled-dataloader",
    ),
    pytest.param(
        lambda: fit(mlp(), 42),
        DataError,
        r"unsupported data of type int; pass a datasets\.Dataset",
        id="data-not-a-dataset",
    ),
    # ---- selector, call order, model
    pytest.param(
        lambda: fit(mlp(), vectors(), selector="entropy"),
        ConfigError,
        r"unknown selector 'entropy'; registered selectors are \[.*'loss'.*\]",
        id="unknown-selector",
    ),
    pytest.param(
        lambda: ProjectionCorrector(mlp(), config()).apply(),
        VerifixError,
        r"no statistics yet.*call corrector\.fit\(train_data\) before apply",
        id="apply-before-fit",
    ),
    pytest.param(
        lambda: ProjectionCorrector(mlp(), config()).search_alpha(vectors()),
        VerifixError,
        r"no statistics yet.*call corrector\.fit\(train_data\) before apply, search_alpha",
        id="search-alpha-before-fit",
    ),
    pytest.param(
        lambda: ProjectionCorrector(meta_model(), config()),
        VerifixError,
        r"tensor\(s\) on the meta device \(no data\).*materialise them first",
        id="model-on-meta-device",
    ),
    pytest.param(
        lambda: ProjectionCorrector(mlp(), config()).fit(hf_vectors().to_iterable_dataset()),
        DataError,
        r"got a stream \(IterableDataset\), but the trusted samples are revisited by index.*streaming=True, or take",
        id="streaming-dataset",
    ),
    pytest.param(
        lambda: ProjectionCorrector(mlp(), config()).fit(DataLoader(hf_vectors().to_iterable_dataset(), batch_size=4)),
        DataError,
        r"got a stream \(IterableDataset in a DataLoader\)",
        id="dataloader-over-a-stream",
    ),
    pytest.param(
        lambda: ProjectionCorrector(lambda x: x, config()),
        InputTypeError,
        r"model must be a torch\.nn\.Module, got function; pass the model itself",
        id="model-not-a-module",
    ),
    pytest.param(
        lambda: ProjectionCorrector(mlp(), {"alpha": 1e4}),
        ConfigError,
        r"config must be a CorrectionConfig, got dict",
        id="config-not-a-config",
    ),
    pytest.param(
        lambda: ProjectionCorrector(mlp(), config(), n_trusted=0),
        ConfigError,
        r"n_trusted must be an integer >= 1 \(e\.g\. 1000\), got 0",
        id="bad-keyword-override",
    ),
]


@pytest.mark.parametrize(("call", "error", "match"), CASES)
def test_bad_input_raises(call: Callable[[], Any], error: type[BaseException], match: str) -> None:
    raised = raises_exactly(call, error, match)
    if error is not TypeError:
        assert isinstance(raised, VerifixError)


def test_error_classes_subclass_the_builtins_they_replace() -> None:
    assert issubclass(ConfigError, ValueError) and issubclass(ConfigError, VerifixError)
    assert issubclass(DataError, ValueError) and issubclass(DataError, VerifixError)
    assert issubclass(LayerError, ValueError) and issubclass(LayerError, VerifixError)
    assert issubclass(NumericalError, ArithmeticError) and issubclass(NumericalError, VerifixError)
    assert issubclass(InputTypeError, TypeError) and issubclass(InputTypeError, VerifixError)


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda: symmetric_noise([0, 1, 2], rate=1.5, num_classes=3), ConfigError),
        (lambda: symmetric_noise([0, 1, 2], rate="0.2", num_classes=3), InputTypeError),
        (lambda: symmetric_noise([0.0, 1.0], rate=0.2, num_classes=2), InputTypeError),
        (lambda: symmetric_noise([0, 5], rate=0.2, num_classes=3), DataError),
        (lambda: transition_noise([0, 1], [[0.5, 0.6], [0.0, 1.0]]), ConfigError),
        (lambda: load_fashion_mnist_arrays("dev"), ConfigError),
        (lambda: load_fashion_mnist_arrays("test", limit=1.5), InputTypeError),
        (lambda: load_mnist_arrays("dev"), ConfigError),
    ],
)
def test_noise_and_dataset_loaders_raise_hf_verifix_errors(call: Callable[[], Any], error: type) -> None:
    with pytest.raises(error) as info:
        call()
    assert type(info.value) is error and isinstance(info.value, VerifixError)


def test_apply_accepts_numpy_floats_and_rejects_numpy_nan() -> None:
    corrector = fitted()
    corrector.apply(alpha=np.float64(1e4))
    assert corrector.applied_alpha == 1e4
    with pytest.raises(ConfigError, match=r"got np\.float64\(nan\)|got nan"):
        corrector.apply(alpha=np.float64("nan"))


def test_apply_accepts_numpy_integers_like_the_config() -> None:
    assert CorrectionConfig(alpha=np.int64(10)).alpha == 10.0
    fitted().apply(alpha=np.int64(10))


def test_a_lone_pattern_string_is_one_pattern_not_its_characters() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4), nn.Linear(4, 3))
    assert list(find_target_layers(model, target_modules="0|2").targets) == ["0", "2"]
    assert list(find_target_layers(model, exclude_modules="23").targets) == ["0", "2", "3"]


def test_bad_apply_alpha_leaves_the_weights_alone() -> None:
    corrector = fitted()
    before = {k: v.clone() for k, v in corrector.model.state_dict().items()}
    with pytest.raises(ConfigError):
        corrector.apply(alpha=-1.0)
    assert all(torch.equal(before[k], v) for k, v in corrector.model.state_dict().items())
    assert corrector.applied_alpha is None


def test_unknown_keyword_override_warns_at_the_callers_line() -> None:
    with pytest.warns(UserWarning, match=r"ignoring unknown CorrectionConfig keys \['n_trust'\]") as record:
        ProjectionCorrector(mlp(), config(), n_trust=5)
    assert record[0].filename == __file__


# ---------------------------------------------------------------------------------------------
# an error in the middle of a pass leaves the model as it was
# ---------------------------------------------------------------------------------------------


def bn_dropout_net() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Flatten(),
        nn.Linear(3 * 8 * 8, 3),
    )
    model.train()
    model[3].eval()  # a mixed train/eval state, which must come back exactly
    return model


class Samples(torch.utils.data.Dataset):
    """A map-style dataset of ``(input, label)`` pairs whose inputs may differ in shape."""

    def __init__(self, inputs: list[torch.Tensor], labels: list[int]) -> None:
        self.inputs, self.labels = inputs, labels

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.inputs[index], self.labels[index]


def poisoned_images(bad: int, value: float) -> TensorDataset:
    data = images(12)
    x = data.tensors[0].clone()
    x[bad, 0, 2, 5] = value
    return TensorDataset(x, data.tensors[1])


def assert_model_untouched(model: nn.Module, state: dict[str, torch.Tensor], modes: dict[str, bool]) -> None:
    after = model.state_dict()
    assert after.keys() == state.keys()
    changed = [k for k in state if not torch.equal(state[k], after[k])]
    assert not changed, f"tensors changed by a failed fit: {changed}"
    assert {n: m.training for n, m in model.named_modules()} == modes
    for name, module in model.named_modules():
        for hooks in ("_forward_pre_hooks", "_forward_hooks", "_backward_hooks"):
            assert not getattr(module, hooks), f"{hooks} left on {name or 'the model'!r}: {getattr(module, hooks)}"


@pytest.mark.parametrize(
    ("data", "trusted", "error", "match"),
    [
        pytest.param(
            poisoned_images(9, math.nan), list(range(12)), NumericalError, r"layer '0'", id="nan-in-3rd-batch"
        ),
        pytest.param(poisoned_images(10, math.inf), None, NumericalError, r"samples \[10\]", id="inf-in-selection"),
        pytest.param(
            Samples([torch.randn(1, 8, 8)] * 8 + [torch.randn(1, 8, 7)] * 4, [0, 1, 2] * 4),
            list(range(12)),
            DataError,
            r"Linear expects inputs of size 192 in the last dimension, got \(4, 168\)",
            id="shape-error-in-3rd-batch",
        ),
    ],
)
def test_failed_fit_leaves_model_unchanged(data: Any, trusted: Any, error: type[BaseException], match: str) -> None:
    model = bn_dropout_net()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    modes = {n: m.training for n, m in model.named_modules()}
    corrector = ProjectionCorrector(model, config(batch_size=4))
    with pytest.raises(error, match=match):
        corrector.fit(data, trusted_indices=trusted)
    assert_model_untouched(model, state, modes)


def test_failed_refit_after_apply_restores_the_original_weights() -> None:
    model = bn_dropout_net()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    modes = {n: m.training for n, m in model.named_modules()}
    corrector = ProjectionCorrector(model, config(batch_size=4)).fit(images(12))
    corrector.apply(alpha=10.0)
    assert not torch.equal(model[0].weight, state["0.weight"])
    with pytest.raises(NumericalError):
        corrector.fit(poisoned_images(9, math.nan), trusted_indices=list(range(12)))
    assert_model_untouched(model, state, modes)


def test_no_warning_escapes_a_clean_fit() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit(mlp(), vectors()).apply(alpha=1e4)


# ---------------------------------------------------------------------------------------------
# layers that cannot be corrected: refused before any work, or skipped on request
# ---------------------------------------------------------------------------------------------


class PaddedConv(nn.Conv2d):
    """Like timm's Conv2dSame: pads in its own forward, so the stored weight is not applied as Conv2d would."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(nn.functional.pad(x, (0, 1, 0, 1)))


class Counted(nn.Module):
    """Counts the forward passes of the wrapped model."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.inner(x)


class CountedData(torch.utils.data.Dataset):
    def __init__(self, data: TensorDataset) -> None:
        self.data, self.reads = data, 0

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.reads += 1
        return self.data[index]


def uncorrectable_net() -> Counted:
    torch.manual_seed(0)
    return Counted(
        nn.Sequential(
            nn.Conv2d(1, 2, 3, padding=1),
            nn.ReLU(),
            PaddedConv(2, 2, 2),
            nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect"),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(2 * 8 * 8, 3),
        )
    )


def test_uncorrectable_layers_are_refused_before_any_forward_pass_or_data_read() -> None:
    model = uncorrectable_net()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    data = CountedData(images(12))
    with pytest.raises(LayerError) as info:
        ProjectionCorrector(model, config()).fit(data)
    message = str(info.value)
    assert message.startswith("refusing to correct Counted: 2 targeted layer(s) cannot be corrected exactly (")
    assert (
        "'inner.2': PaddedConv overrides Conv2d.forward (e.g. pads or standardises the weight in forward)" in message
    )
    assert "'inner.3': padding_mode='reflect' (only 'zeros' padding can be unfolded exactly)" in message
    assert "'inner.0'" not in message and "'inner.6'" not in message  # correctable layers are not listed
    assert r"adding ['inner\\.2', 'inner\\.3'] to exclude_modules" in message and "on_uncorrectable='skip'" in message
    assert model.calls == 0 and data.reads == 0, "nothing may run before the refusal"
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())

    # The two fixes the message offers both work.
    excluded = ProjectionCorrector(model, config(exclude_modules=[r"inner\.2", r"inner\.3"]))
    with pytest.warns(UserWarning, match=r"'inner\.2': excluded by exclude_modules; 'inner\.3': excluded"):
        excluded.fit(data)
    assert model.calls > 0 and list(excluded.projections) == ["inner.0", "inner.6"]
    skipping = ProjectionCorrector(uncorrectable_net(), config(on_uncorrectable="skip"))
    with pytest.warns(UserWarning, match=r"leaving 2 layer\(s\) uncorrected: 'inner\.2': PaddedConv overrides"):
        skipping.fit(images(12))
    assert list(skipping.projections) == ["inner.0", "inner.6"]
    assert set(skipping.skipped) == {"inner.2", "inner.3"}


class WithUnusedLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Linear(4, 3)
        self.spare = nn.Linear(4, 3)  # never called: only known after the forward pass

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def test_a_layer_never_called_is_only_a_warning_even_when_refusing() -> None:
    corrector = ProjectionCorrector(WithUnusedLayer(), config())
    assert corrector.config.on_uncorrectable == "error"
    with pytest.warns(UserWarning, match=r"leaving 1 layer\(s\) uncorrected: 'spare': never called"):
        corrector.fit(vectors())
    assert list(corrector.projections) == ["body"]
