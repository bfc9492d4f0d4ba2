"""Reliability of the input paths: image conversion by mode and layout, model dtypes, and bad inputs refused by name.

Each bad input raises exactly the documented hf_verifix error with a message naming what was received and the fix
(the ``CASES`` table); each conversion is checked against exact values. Everything is tiny, seeded and offline.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from typing import Any

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from testing_utils import raises_exactly, tiny_vit
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchvision import transforms

from hf_verifix import CorrectionConfig, ProjectionCorrector
from hf_verifix.data.images import float_image, image_to_tensor
from hf_verifix.data.source import SampleSource, as_source
from hf_verifix.errors import DataError, NumericalError, VerifixError
from hf_verifix.metrics import predictions_and_labels, source_accuracy
from hf_verifix.models.forward import evaluation_mode

# ---------------------------------------------------------------------------------------------
# tiny models and data
# ---------------------------------------------------------------------------------------------


def mlp(classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, classes))


def cnn(classes: int = 3, channels: int = 1) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(channels, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 6 * 6, classes))


def vectors(n: int = 12, width: int = 4, labels: Any = None, dtype: torch.dtype = torch.float32) -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 3 if labels is None else torch.as_tensor(labels)
    return TensorDataset(torch.randn(len(y), width, generator=generator).to(dtype), y)


def images(n: int = 6, size: int = 8, channels: int = 1) -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(n, channels, size, size, generator=generator), torch.arange(n) % 3)


def config(**overrides: Any) -> CorrectionConfig:
    return CorrectionConfig(**{"n_trusted": 4, "progress": False, **overrides})


def fit(model: nn.Module, data: Any, trusted: Any = None, **overrides: Any) -> ProjectionCorrector:
    return ProjectionCorrector(model, config(**overrides)).fit(data, trusted_indices=trusted)


def search(eval_data: Any, model: nn.Module | None = None, train: Any = None) -> Any:
    corrector = fit(model or mlp(), vectors() if train is None else train)
    return corrector.search_alpha(eval_data, alphas=[10.0, 1e4])


_PIXELS = [np.random.RandomState(i).randint(0, 255, (8, 8), dtype=np.uint8) for i in range(6)]


def hf_images(
    images_: list[Any] | None = None, labels: list[Any] | None = None, label_feature: Any = None
) -> datasets.Dataset:
    """Six 8x8 grayscale images labelled 0, 1, 2, 0, 1, 2 (or the images and labels given)."""
    features = datasets.Features(
        {"image": datasets.Image(), "label": label_feature or datasets.ClassLabel(num_classes=3)}
    )
    data = {
        "image": images_ if images_ is not None else [Image.fromarray(p) for p in _PIXELS],
        "label": labels if labels is not None else [0, 1, 2, 0, 1, 2],
    }
    return datasets.Dataset.from_dict(data, features=features)


def png_bytes(seed: int = 0, size: int = 32) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.RandomState(seed).randint(0, 255, (size, size), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def with_bytes(position: int, data: bytes) -> datasets.Dataset:
    """Six 32x32 PNG images, the one at ``position`` replaced by ``data``."""
    stored = [{"bytes": png_bytes(i), "path": None} for i in range(6)]
    stored[position] = {"bytes": data, "path": None}
    return hf_images(stored)


def pixel_values(rows: list[Any], feature: Any = None) -> datasets.Dataset:
    features = datasets.Features(
        {"pixel_values": feature or datasets.Array3D((1, 8, 8), "float32"), "labels": datasets.Value("int64")}
    )
    return datasets.Dataset.from_dict({"pixel_values": rows, "labels": [i % 3 for i in range(len(rows))]}, features)


class Samples(torch.utils.data.Dataset):
    """A map-style dataset of ``(input, label)`` pairs given as lists (inputs may differ in shape)."""

    def __init__(self, inputs: list[Any], labels: list[Any]) -> None:
        self.inputs, self.labels = inputs, labels

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        return self.inputs[index], self.labels[index]


def mode_i(values: list[list[int]]) -> Image.Image:
    return Image.fromarray(np.array(values, dtype=np.int32))  # mode "I"


# ---------------------------------------------------------------------------------------------
# the table: (call, exception type, message pattern)
# ---------------------------------------------------------------------------------------------

CASES = [
    # ---- 1. image layouts and modes
    pytest.param(
        lambda: image_to_tensor(np.zeros((3, 8, 3), np.uint8), None, 3),
        DataError,
        r"cannot tell the layout of an image of shape \(3, 8, 3\): it reads as 3 channels of \(8, 3\) \(CHW\) or "
        r"as 3 channels of \(3, 8\) \(HWC\) for a model taking 3 channels; pass PIL images or CHW float tensors",
        id="array-layout-ambiguous-3x8x3",
    ),
    pytest.param(
        lambda: image_to_tensor(np.zeros((4, 4, 4), np.uint8), None, 3),
        DataError,
        r"cannot tell the layout of an image of shape \(4, 4, 4\).*transform= that returns a \(channels, height",
        id="array-layout-ambiguous-4x4x4",
    ),
    pytest.param(
        lambda: image_to_tensor(np.zeros((4, 8, 3), np.int64), None, None),
        DataError,
        r"cannot tell the layout of an image of shape \(4, 8, 3\): it reads as 4 channels.*or as 3 channels of "
        r"\(4, 8\) \(HWC\); pass PIL images",
        id="array-layout-ambiguous-without-conv",
    ),
    pytest.param(
        lambda: image_to_tensor(mode_i([[0, 70000]]), None, 1),
        DataError,
        r"got a mode 'I' \(32-bit integer\) image with values from 0 to 70000, outside the 16-bit range "
        r"\[0, 65535\].*convert it yourself: a mode 'F' image on the 0-1 scale",
        id="pil-mode-I-beyond-16-bits",
    ),
    pytest.param(
        lambda: image_to_tensor(mode_i([[-5, 3]]), transforms.ToTensor(), None),
        DataError,
        r"mode 'I' .* values from -5 to 3, outside the 16-bit range",
        id="pil-mode-I-negative-with-transform",
    ),
    # ---- 3. raw exceptions from the model or the data, now DataErrors with the fix
    pytest.param(
        lambda: fit(mlp(), vectors(width=5)),
        DataError,
        r"the model failed on a batch of torch\.float32 inputs of shape \(12, 5\): mat1 and mat2 shapes cannot be "
        r"multiplied \(12x5 and 4x8\)\. The data does not fit the model: its first Linear layer '0' takes 4 "
        r"features in the last dimension; pass inputs of the shape.*for feature vectors, the width",
        id="input-width-in-selection",
    ),
    pytest.param(
        lambda: search(vectors(width=5)),
        DataError,
        r"inputs of shape \(12, 5\): mat1 and mat2 shapes cannot be multiplied.*first Linear layer '0' takes 4",
        id="input-width-in-evaluation",
    ),
    pytest.param(
        lambda: fit(cnn(), images(size=10)),
        DataError,
        r"inputs of shape \(6, 1, 10, 10\): mat1 and mat2 shapes cannot be multiplied \(6x128 and 72x3\).*first "
        r"Conv2d layer '0' takes images of shape \(batch, 1, height, width\).*Resize\(\(height, width\)\)",
        id="image-size-for-fixed-size-model",
    ),
    pytest.param(
        lambda: search(images(size=10), cnn(), images()),
        DataError,
        r"inputs of shape \(6, 1, 10, 10\).*Resize",
        id="image-size-in-evaluation",
    ),
    pytest.param(
        # 1 layer, 8 wide, 16x16 images in 8x8 patches, ViTConfig's default 2 labels: fed 8x8 images.
        lambda: fit(
            tiny_vit(num_labels=2, patch_size=8, hidden_size=8, num_hidden_layers=1, intermediate_size=8),
            images(size=8, channels=3),
        ),
        DataError,
        r"inputs of shape \(6, 3, 8, 8\): Input image size \(8\*8\) doesn't match model \(16\*16\).*its config "
        r"gives image_size=16; pass inputs of the shape",
        id="image-size-for-transformers-vit",
    ),
    pytest.param(
        lambda: fit(cnn(), images(channels=3)),
        DataError,
        r"inputs of shape \(6, 3, 8, 8\): .*expected input\[6, 3, 8, 8\] to have 1 channels, but got 3 channels.*"
        r"converts them to its channel count",
        id="image-channels-for-conv",
    ),
    pytest.param(
        lambda: fit(cnn(), images(size=2)),
        DataError,
        r"inputs of shape \(6, 1, 2, 2\): .*Kernel size can't be greater than actual input size",
        id="image-smaller-than-kernel",
    ),
    pytest.param(
        lambda: fit(mlp(), TensorDataset(torch.arange(48).reshape(12, 4), torch.arange(12) % 3)),
        DataError,
        r"a batch of torch\.int64 inputs of shape \(12, 4\): .*same dtype.*its weights are torch\.float32; pass "
        r"floating-point inputs \(e\.g\. x\.float\(\) / 255",
        id="integer-inputs-into-float-model",
    ),
    pytest.param(
        lambda: fit(cnn(), hf_images([Image.fromarray(p) for p in _PIXELS[:3]] + [Image.new("L", (9, 9))] * 3)),
        DataError,
        r"the inputs of one batch have 2 different shapes \(\(1, 8, 8\), \(1, 9, 9\)\), so they cannot be stacked: "
        r"stack expects each tensor to be equal size.*pass transform= that resizes every image",
        id="hf-mixed-image-sizes",
    ),
    pytest.param(
        lambda: fit(
            mlp(), DataLoader(Samples([torch.zeros(4)] * 3 + [torch.zeros(5)] * 3, [0, 1, 2] * 2), batch_size=6)
        ),
        DataError,
        r"the inputs of one batch have 2 different shapes \(\(4,\), \(5,\)\)",
        id="dataloader-mixed-input-sizes",
    ),
    pytest.param(
        lambda: fit(cnn(), hf_images(labels=[0, 1, None, 0, None, 2])),
        DataError,
        r"2 label\(s\) are missing \(None\), at samples \[2, 4\]; every sample needs an integer class id: label "
        r"those samples or drop them first, e\.g\. dataset = dataset\.filter",
        id="hf-none-label-classlabel",
    ),
    pytest.param(
        lambda: fit(cnn(), hf_images(labels=[0, 1, 2, 0, 1, None], label_feature=datasets.Value("int64"))),
        DataError,
        r"1 label\(s\) are missing \(None\), at samples \[5\]",
        id="hf-none-label-int-column",
    ),
    pytest.param(
        lambda: fit(cnn(), with_bytes(3, b"this is not a PNG file")),
        DataError,
        r"cannot decode the image of sample 3 in column 'image': UnidentifiedImageError: cannot identify image "
        r"file.*not a readable image.*dataset\.select\(i for i in range\(len\(dataset\)\) if i != 3\)",
        id="hf-corrupt-png",
    ),
    pytest.param(
        lambda: fit(cnn(), with_bytes(4, png_bytes(4)[:560])),
        DataError,
        r"cannot decode the image of sample 4 in column 'image': OSError: image file is truncated",
        id="hf-truncated-png",
    ),
    # ---- 4. evaluation labels
    pytest.param(
        lambda: search(vectors(labels=[5, 6, 7] * 4)),
        DataError,
        r"evaluation labels must be in \[0, 3\) for a model with 3 outputs, got \[5, 6, 7\] in 12 of 12 samples "
        r"\(samples \[0, 1, 2, 3, 4\]\), which no prediction can match; remap the labels to 0\.\.2 \(align them "
        r"with the model's id2label",
        id="eval-labels-all-out-of-range",
    ),
    pytest.param(
        lambda: search(vectors(labels=[0, 1, 2, -1] * 3)),
        DataError,
        r"evaluation labels must be in \[0, 3\).*got \[-1\] in 3 of 12 samples \(samples \[3, 7, 11\]\)",
        id="eval-labels-negative",
    ),
    pytest.param(
        lambda: source_accuracy(mlp(), as_source(vectors(labels=[0, 1, 3] * 4), mlp())),
        DataError,
        r"evaluation labels must be in \[0, 3\).*got \[3\] in 4 of 12 samples \(samples \[2, 5, 8, 11\]\)",
        id="source-accuracy-label-too-large",
    ),
    pytest.param(
        lambda: predictions_and_labels(mlp(2), SampleSource(vectors(labels=[0, 1, 2] * 4))),
        DataError,
        r"evaluation labels must be in \[0, 2\) for a model with 2 outputs, got \[2\]",
        id="predictions-and-labels-label-too-large",
    ),
    # ---- further bad inputs
    pytest.param(
        lambda: image_to_tensor(np.zeros((1, 1, 8, 8), np.float32), None, 1),
        DataError,
        r"expected one image of shape \(height, width\), \(channels, height, width\) or \(height, width, "
        r"channels\), got shape \(1, 1, 8, 8\); squeeze the extra dimensions",
        id="array-4d-per-image",
    ),
    pytest.param(
        lambda: fit(cnn(), TensorDataset(torch.randn(6, 1, 1, 8, 8), torch.arange(6) % 3)),
        DataError,
        r"inputs of shape \(6, 1, 1, 8, 8\).*expects batched images of shape \(batch, channels, height, width\)",
        id="tensor-5d-batch",
    ),
    pytest.param(
        lambda: fit(cnn(), pixel_values([np.zeros((1, 1, 8, 8))] * 6, datasets.Array4D((1, 1, 8, 8), "float32"))),
        DataError,
        r"got shape \(1, 1, 8, 8\); squeeze the extra dimensions",
        id="hf-array4d-column",
    ),
    pytest.param(
        lambda: image_to_tensor(Image.new("L", (0, 0)), None, 1),
        DataError,
        r"got an empty image \(size \(0, 0\)\); every sample needs its pixels",
        id="pil-zero-size-image",
    ),
    pytest.param(
        lambda: image_to_tensor(np.zeros((0, 8), np.uint8), None, 1),
        DataError,
        r"got an empty image \(shape \(0, 8\)\); every sample needs its pixels",
        id="array-zero-size-image",
    ),
    pytest.param(
        lambda: image_to_tensor(torch.zeros(2, 8, 8), None, 3),
        DataError,
        r"got an image of 2 channels \(shape \(2, 8, 8\)\) for a model whose first Conv2d takes 3; convert the "
        r"images to 3 channels",
        id="two-channel-image-for-rgb-model",
    ),
    pytest.param(
        lambda: image_to_tensor(torch.zeros(8, 8, dtype=torch.complex64), None, 1),
        DataError,
        r"cannot turn a torch\.complex64 tensor into an image tensor; expected real numbers",
        id="complex-image",
    ),
    pytest.param(
        lambda: image_to_tensor([[1, 2], [3]], None, 1),
        DataError,
        r"cannot turn a nested list of rows of different lengths into an image tensor.*pad or resize",
        id="ragged-list-image",
    ),
    pytest.param(
        lambda: fit(
            mlp(), datasets.Dataset.from_dict({"pixel_values": [[[1.0, 2.0], [3.0]]] * 6, "labels": [0, 1, 2] * 2})
        ),
        DataError,
        r"cannot turn a nested list of rows of different lengths into an image tensor",
        id="hf-ragged-row",
    ),
    pytest.param(
        lambda: image_to_tensor(np.array(["a", "b"]), None, 1),
        DataError,
        r"cannot turn an array of dtype <U1 into an image tensor; expected numbers",
        id="string-array-image",
    ),
    pytest.param(
        lambda: fit(
            cnn(),
            hf_images().add_column("caption", list("abcdef")),
            image_column="caption",
        ),
        DataError,
        r"cannot turn an image of type str into a tensor; expected a PIL image, a numpy array or a tensor",
        id="hf-image-column-of-strings",
    ),
    pytest.param(
        lambda: fit(
            cnn(), hf_images(labels=[True, False, True, False, True, False], label_feature=datasets.Value("bool"))
        ),
        DataError,
        r"labels must be integer class ids, got bool True; map class names to ids first",
        id="hf-bool-labels",
    ),
    pytest.param(
        lambda: fit(mlp(), Samples([torch.zeros(4)] * 6, [0.0, 1.0, 2.0] * 2)),
        DataError,
        r"labels must be integer class ids, got a torch\.float64 tensor; cast them with \.long\(\)",
        id="float-labels-from-a-torch-dataset",
    ),
    pytest.param(
        lambda: fit(
            mlp(),
            pixel_values([[[1.0] * 4]] * 6, datasets.Array2D((1, 4), "float32"))
            .remove_columns("labels")
            .add_column("labels", ["0", "1", "2"] * 2),
        ),
        DataError,
        r"labels must be integer class ids, got str '0'; map class names to ids first",
        id="hf-digit-string-labels",
    ),
    pytest.param(
        lambda: fit(cnn(), pixel_values([np.full((1, 8, 8), math.nan if i == 1 else 0.5) for i in range(6)])),
        NumericalError,
        r"the inputs of samples \[1\] contain NaN, so their loss is not finite; clean or drop those samples",
        id="hf-nan-pixels",
    ),
    pytest.param(
        lambda: fit(
            cnn(),
            hf_images([Image.fromarray(np.full((8, 8), math.nan if i == 2 else 0.5, np.float32)) for i in range(6)]),
        ),
        NumericalError,
        r"the inputs of samples \[2\] contain NaN",
        id="hf-nan-in-float-image",
    ),
    pytest.param(
        lambda: search(TensorDataset(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))),
        DataError,
        r"the dataset is empty; pass at least one labelled sample",
        id="eval-data-empty",
    ),
    pytest.param(
        lambda: fit(mlp(), pixel_values([[[1.0] * 4]] * 6, datasets.Array2D((1, 4), "float32")).select([])),
        DataError,
        r"the dataset is empty; pass at least one labelled sample",
        id="hf-empty-array-dataset",
    ),
    pytest.param(
        lambda: fit(cnn(), hf_images(), image_column="label"),
        DataError,
        r"cannot turn an image of type int into a tensor",
        id="hf-image-column-of-ints",
    ),
]


@pytest.mark.parametrize(("call", "error", "match"), CASES)
def test_bad_input_raises(call: Callable[[], Any], error: type[BaseException], match: str) -> None:
    assert isinstance(raises_exactly(call, error, match), VerifixError)


# ---------------------------------------------------------------------------------------------
# 1. image conversion by layout and mode: exact values
# ---------------------------------------------------------------------------------------------


def test_an_hwc_array_keeps_every_row() -> None:
    array = np.arange(96, dtype=np.uint8).reshape(4, 8, 3)
    expected = torch.from_numpy(array).permute(2, 0, 1).float() / 255
    assert torch.equal(image_to_tensor(array, None, 3), expected)  # was read as CHW RGBA: a row lost
    gray = np.arange(24, dtype=np.uint8).reshape(3, 8, 1)  # HWC for a 1-channel model, not 3 channels of 8x1
    assert torch.equal(image_to_tensor(gray, None, 1), torch.from_numpy(gray).permute(2, 0, 1).float() / 255)
    one_row = np.arange(24, dtype=np.uint8).reshape(1, 8, 3)  # one RGB row, not a gray 8x3 image
    assert image_to_tensor(one_row, None, 3).shape == (3, 1, 8)


def test_unambiguous_and_float_layouts_are_kept() -> None:
    chw = torch.arange(48.0).reshape(3, 4, 4)
    assert torch.equal(image_to_tensor(chw, None, 3), chw)
    # Preprocessed float pixel_values are CHW (as image processors lay them out), even when (3, 4, 3) could be HWC.
    square = torch.arange(36.0).reshape(3, 4, 3)
    assert torch.equal(image_to_tensor(square, None, 3), square)
    hwc = np.arange(60, dtype=np.uint8).reshape(5, 4, 3)
    assert torch.equal(image_to_tensor(hwc, None, 3), torch.from_numpy(hwc).permute(2, 0, 1).float() / 255)


def test_float_pil_images_keep_their_values() -> None:
    values = np.array([[0.25, 1.5], [-2.0, 0.0]], np.float32)
    image = Image.fromarray(values)
    assert image.mode == "F"
    expected = torch.from_numpy(values)[None]
    assert torch.equal(image_to_tensor(image, None, 1), expected)  # was all zeros
    assert torch.equal(image_to_tensor(image, None, None), expected)
    assert torch.equal(image_to_tensor(image, None, 3), expected.expand(3, 2, 2))
    assert torch.equal(image_to_tensor(image, transforms.ToTensor(), 1), expected)


def test_16_bit_pil_images_are_scaled_by_1_over_65535() -> None:
    values = np.array([[0, 1000], [40000, 65535]], np.uint16)
    expected = torch.from_numpy(values.astype(np.float32) / np.float32(65535))[None]
    sixteen = Image.fromarray(values)
    assert sixteen.mode == "I;16"
    assert torch.equal(image_to_tensor(sixteen, None, 1), expected)  # was clipped at 255
    assert torch.equal(image_to_tensor(sixteen, transforms.ToTensor(), None), expected)
    assert torch.equal(image_to_tensor(mode_i(values.astype(np.int32).tolist()), None, 1), expected)
    assert float_image(sixteen).mode == "F"
    # A 3-channel model's transform gets 8-bit RGB of the scaled values: round(v / 65535 * 255).
    rgb = image_to_tensor(sixteen, transforms.ToTensor(), 3)
    assert rgb.shape == (3, 2, 2)
    assert (rgb * 255).round().int()[0].tolist() == [[0, 4], [156, 255]]


def test_16_bit_png_in_a_datasets_image_column_reaches_the_model_scaled() -> None:
    values = np.array([[0, 1000], [40000, 65535]], np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(values).save(buffer, "PNG")
    data = hf_images([{"bytes": buffer.getvalue(), "path": None}] * 3, [0, 1, 2])
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.Flatten(), nn.Linear(8, 3))
    image, label = as_source(data, model).dataset[0]
    assert label == 0
    assert torch.equal(image, torch.from_numpy(values.astype(np.float32) / np.float32(65535))[None])


@pytest.mark.parametrize(
    ("mode", "channels", "expected"),
    [
        pytest.param("1", None, [[[0.0, 1.0]]], id="1"),
        pytest.param("L", None, [[[10 / 255, 200 / 255]]], id="L"),
        pytest.param("L", 3, [[[10 / 255, 200 / 255]]] * 3, id="L-to-3"),
        pytest.param("LA", None, [[[10 / 255, 200 / 255]], [[255 / 255, 0.0]]], id="LA"),
        pytest.param("LA", 1, [[[10 / 255, 200 / 255]]], id="LA-to-1"),
        pytest.param("P", None, [[[10 / 255, 200 / 255]], [[20 / 255, 100 / 255]], [[30 / 255, 0.0]]], id="P"),
        pytest.param("RGBA", 3, [[[10 / 255, 200 / 255]], [[20 / 255, 100 / 255]], [[30 / 255, 0.0]]], id="RGBA"),
    ],
)
def test_8_bit_pil_modes_convert_like_torchvision(mode: str, channels: int | None, expected: Any) -> None:
    if mode == "1":
        image = Image.new("1", (2, 1))
        image.putpixel((1, 0), 1)
    elif mode == "P":
        image = Image.new("P", (2, 1))
        image.putpalette([10, 20, 30, 200, 100, 0] + [0] * 762)
        image.putpixel((1, 0), 1)
    elif mode in ("L", "LA"):
        image = Image.fromarray(np.array([[10, 200]], np.uint8)).convert(mode)
        if mode == "LA":
            image.putpixel((1, 0), (200, 0))
    else:
        image = Image.fromarray(np.array([[[10, 20, 30, 255], [200, 100, 0, 0]]], np.uint8), "RGBA")
    expected_tensor = torch.tensor(expected, dtype=torch.float32)
    assert torch.equal(image_to_tensor(image, None, channels), expected_tensor)
    if channels is None and mode != "P":  # torchvision's ToTensor reads the bands the same way
        assert torch.equal(transforms.ToTensor()(image), expected_tensor)


@pytest.mark.parametrize("mode", ["CMYK", "YCbCr"])
def test_cmyk_and_ycbcr_become_rgb_by_pils_conversion(mode: str) -> None:
    image = Image.fromarray(np.array([[[10, 20, 30], [200, 100, 0]]], np.uint8)).convert(mode)
    expected = torch.from_numpy(np.asarray(image.convert("RGB"), np.float32) / np.float32(255)).permute(2, 0, 1)
    assert torch.equal(image_to_tensor(image, None, 3), expected)
    assert image_to_tensor(image, None, None).shape[0] == len(mode) if mode == "CMYK" else 3


# ---------------------------------------------------------------------------------------------
# 2. half / double precision models with float32 data
# ---------------------------------------------------------------------------------------------


def _supports(dtype: torch.dtype) -> bool:
    try:
        nn.Linear(2, 2).to(dtype)(torch.zeros(1, 2, dtype=dtype))
    except RuntimeError:
        return False
    return True


@pytest.mark.parametrize(
    "dtype",
    [
        torch.bfloat16,
        torch.float64,
        pytest.param(
            torch.float16,
            marks=pytest.mark.skipif(not _supports(torch.float16), reason="no float16 matmul on this CPU"),
        ),
    ],
)
def test_low_and_double_precision_models_take_float32_data(dtype: torch.dtype) -> None:
    data = vectors(60)
    torch.manual_seed(0)
    reference_model = nn.Sequential(nn.Linear(4, 3))
    model = nn.Sequential(nn.Linear(4, 3)).to(dtype)
    with torch.no_grad():
        # The same weights, exactly representable in every dtype, so both models rank the samples alike.
        reference_model[0].weight.copy_((reference_model[0].weight * 8).round() / 8)
        model[0].weight.copy_(reference_model[0].weight.to(dtype))
        reference_model[0].bias.zero_()
        model[0].bias.zero_()
    cfg = {"n_trusted": 20}
    reference = fit(reference_model, data, **cfg)
    corrector = fit(model, data, **cfg)
    # Losses ranked in low precision may swap near-ties: most of the 20 trusted samples must agree.
    shared = set(reference.trusted_indices.tolist()) & set(corrector.trusted_indices.tolist())
    assert len(shared) >= (20 if dtype == torch.float64 else 16), sorted(shared)
    corrector.apply(alpha=1e4)
    assert model[0].weight.dtype == dtype
    assert torch.isfinite(model[0].weight.float()).all()
    result = corrector.search_alpha(data, alphas=[10.0, 1e4])
    reference_result = reference.search_alpha(data, alphas=[10.0, 1e4])
    assert result.baseline_accuracy == reference_result.baseline_accuracy
    assert set(result.curve) == {10.0, 1e4}
    trusted = fit(model, data, trusted=[0, 5, 9])  # Gram collection alone (no selection pass)
    assert trusted.trusted_indices.tolist() == [0, 5, 9]


def test_a_half_precision_model_takes_a_datasets_image_column() -> None:
    model = cnn().to(torch.bfloat16)
    corrector = fit(model, hf_images())
    corrector.apply(alpha=1e3)
    assert model[0].weight.dtype == torch.bfloat16
    assert corrector.trusted_indices.numel() == 4
    source = as_source(hf_images(), model)
    assert next(iter(source.batches())).inputs.dtype == torch.bfloat16


# ---------------------------------------------------------------------------------------------
# 3. translated errors keep their cause and leave no hooks
# ---------------------------------------------------------------------------------------------


def test_a_shape_error_keeps_the_original_as_its_cause_and_leaves_no_hooks() -> None:
    model = mlp()
    with pytest.raises(DataError) as info:
        fit(model, vectors(width=5))
    assert isinstance(info.value.__cause__, RuntimeError)
    assert "mat1 and mat2 shapes cannot be multiplied" in str(info.value.__cause__)
    for name, module in model.named_modules():
        assert not module._forward_pre_hooks and not module._forward_hooks, name


def test_errors_outside_a_forward_pass_are_not_rewritten() -> None:
    model = mlp()
    with (
        pytest.raises(RuntimeError, match=r"^mat1 and mat2 shapes cannot be multiplied") as info,
        evaluation_mode(model),
    ):
        model(torch.zeros(2, 4))
        torch.zeros(2, 5) @ torch.zeros(4, 2)  # the caller's own bug, not the data's
    assert type(info.value) is RuntimeError


# ---------------------------------------------------------------------------------------------
# 4. evaluation labels in range still evaluate
# ---------------------------------------------------------------------------------------------


def test_evaluation_with_labels_in_range_is_unchanged() -> None:
    model = mlp()
    x = vectors().tensors[0]
    with torch.no_grad():
        predicted = model(x).argmax(-1)
    assert source_accuracy(model, as_source(TensorDataset(x, predicted), model)) == 1.0
    flipped = (predicted + 1) % 3
    assert source_accuracy(model, as_source(TensorDataset(x, flipped), model)) == 0.0
