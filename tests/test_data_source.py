"""The data paths into ``fit`` (hf_verifix.data.source): every input gives the correction of the equivalent tensors.

``datasets.Dataset`` (Image/ClassLabel columns, formats, preprocessed arrays read from Arrow, image processors) and
``DataLoader`` inputs are checked against the equivalent ``TensorDataset``, on tiny seeded models (test_models.py
covers the architectures themselves).
"""

from __future__ import annotations

from typing import Any

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from testing_utils import image_dataset, small_cnn, tiny_vit, weights_of
from testing_utils import quick_config as config
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchvision import transforms
from transformers import ViTImageProcessor

from hf_verifix import CorrectionConfig, ProjectionCorrector
from hf_verifix.errors import DataError


def rgb_and_gray_images(n: int, size: int = 12, seed: int = 0) -> list[Image.Image]:
    """Random PIL images, every fourth one grayscale ('L')."""
    rng = np.random.default_rng(seed)
    images = []
    for i in range(n):
        if i % 4 == 3:
            images.append(Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8), mode="L"))
        else:
            images.append(Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), mode="RGB"))
    return images


def assert_close_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], rtol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for name in a:
        if rtol == 0.0:
            assert torch.equal(a[name], b[name]), name
        else:
            scale = float(b[name].abs().max())
            torch.testing.assert_close(a[name], b[name], rtol=0, atol=rtol * scale, msg=name)


def fitted(model: nn.Module, data: Any, cfg: CorrectionConfig | None = None, **fit_kwargs: Any) -> ProjectionCorrector:
    return ProjectionCorrector(model, cfg or config()).fit(data, **fit_kwargs)


def assert_same_correction(a: ProjectionCorrector, b: ProjectionCorrector, rtol: float = 0.0) -> None:
    """Same trusted set, same Gram spectra and the same projected weights."""
    assert torch.equal(a.trusted_indices, b.trusted_indices)
    assert a.projections.keys() == b.projections.keys()
    assert a.layer_rows == b.layer_rows
    for name in a.projections:
        va, vb = a.projections[name].normalized, b.projections[name].normalized
        torch.testing.assert_close(va, vb, rtol=0, atol=max(rtol, 1e-300) * float(vb.abs().max()), msg=name)
    a.apply(alpha=3e4)
    b.apply(alpha=3e4)
    assert_close_weights(weights_of(a.model, a.projections), weights_of(b.model, b.projections), rtol)


def test_hf_image_dataset_with_rgb_and_grayscale_images_matches_the_tensor_dataset() -> None:
    images = rgb_and_gray_images(20)
    labels = [i % 3 for i in range(20)]
    assert {im.mode for im in images} == {"RGB", "L"}
    # Neither name is one the detection knows, and a decoy 'label' column (not a ClassLabel) holds other labels.
    hf = datasets.Dataset.from_dict(
        {"photo": images, "category": labels, "label": [(y + 1) % 3 for y in labels]},
        features=datasets.Features(
            {
                "photo": datasets.Image(),
                "category": datasets.ClassLabel(names=["cat", "dog", "bird"]),
                "label": datasets.Value("int64"),
            }
        ),
    )
    to_tensor = transforms.ToTensor()
    x = torch.stack([to_tensor(im.convert("RGB")) for im in images])
    reference = fitted(small_cnn(), TensorDataset(x, torch.tensor(labels)))
    decoy = fitted(small_cnn(), TensorDataset(x, torch.tensor(hf["label"])))
    assert not torch.equal(reference.trusted_indices, decoy.trusted_indices)  # the labels matter

    assert_same_correction(fitted(small_cnn(), hf, transform=to_tensor), reference)
    named = config(image_column="photo", label_column="category")
    assert_same_correction(fitted(small_cnn(), hf, named, transform=to_tensor), reference)
    assert_same_correction(fitted(small_cnn(), hf.with_format("torch"), transform=to_tensor), reference)
    assert_same_correction(fitted(small_cnn(), hf.with_format("numpy"), transform=to_tensor), reference)


def test_explicit_columns_pick_among_several_image_and_label_columns() -> None:
    first, second = rgb_and_gray_images(15, seed=1), rgb_and_gray_images(15, seed=2)
    labels_a = [i % 3 for i in range(15)]
    labels_b = [(i * 7 + 1) % 3 for i in range(15)]
    hf = datasets.Dataset.from_dict(
        {"a": first, "b": second, "ya": labels_a, "yb": labels_b},
        features=datasets.Features(
            {
                "a": datasets.Image(),
                "b": datasets.Image(),
                "ya": datasets.ClassLabel(num_classes=3),
                "yb": datasets.ClassLabel(num_classes=3),
            }
        ),
    )
    to_tensor = transforms.ToTensor()

    def reference(images: list[Image.Image], labels: list[int]) -> ProjectionCorrector:
        x = torch.stack([to_tensor(im.convert("RGB")) for im in images])
        return fitted(small_cnn(), TensorDataset(x, torch.tensor(labels)))

    assert_same_correction(fitted(small_cnn(), hf, transform=to_tensor), reference(first, labels_a))
    chosen = config(image_column="b", label_column="yb")
    assert_same_correction(fitted(small_cnn(), hf, chosen, transform=to_tensor), reference(second, labels_b))


def test_default_transform_of_a_transformers_vit_resizes_and_normalises() -> None:
    images = rgb_and_gray_images(10, size=20)
    labels = [i % 3 for i in range(10)]
    hf = image_dataset(images, labels)
    manual = transforms.Compose(
        [transforms.Resize((16, 16)), transforms.ToTensor(), transforms.Normalize([0.5] * 3, [0.5] * 3)]
    )
    x = torch.stack([manual(im.convert("RGB")) for im in images])
    cfg = config(n_trusted=6)
    assert_same_correction(
        fitted(tiny_vit(), hf, cfg), fitted(tiny_vit(), TensorDataset(x, torch.tensor(labels)), cfg)
    )


def test_image_processor_preprocessed_columns_and_collate_fn_paths_match_the_tensor_dataset() -> None:
    images = rgb_and_gray_images(10, size=20)
    labels = [i % 3 for i in range(10)]
    hf = image_dataset(images, labels)
    processor = ViTImageProcessor(size={"height": 16, "width": 16})
    pixel_values = torch.cat(
        [processor(images=im.convert("RGB"), return_tensors="pt")["pixel_values"] for im in images]
    )
    cfg = config(n_trusted=6)
    reference = fitted(tiny_vit(), TensorDataset(pixel_values, torch.tensor(labels)), cfg)

    # An image processor as the transform.
    assert_same_correction(fitted(tiny_vit(), hf, cfg, transform=processor), reference, rtol=1e-6)

    # A column already preprocessed with map(): used as it is, whatever the format.
    preprocessed = hf.map(
        lambda batch: {
            "pixel_values": [processor(images=im.convert("RGB"))["pixel_values"][0] for im in batch["image"]]
        },
        batched=True,
        remove_columns=["image"],
    )
    for data in (preprocessed, preprocessed.with_format("torch")):
        assert_same_correction(fitted(tiny_vit(), data, cfg), reference, rtol=1e-6)

    # The usual transformers recipe: with_transform plus a DataLoader whose collate_fn builds pixel_values/labels.
    def preprocess(batch: dict[str, Any]) -> dict[str, Any]:
        batch["pixel_values"] = [processor(images=im.convert("RGB"))["pixel_values"][0] for im in batch["image"]]
        return batch

    def collate(rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return {
            "pixel_values": torch.stack([torch.as_tensor(r["pixel_values"]) for r in rows]),
            "labels": torch.tensor([r["label"] for r in rows]),
        }

    loader = DataLoader(hf.with_transform(preprocess), batch_size=4, collate_fn=collate)
    assert_same_correction(fitted(tiny_vit(), loader, cfg), reference, rtol=1e-6)
    with pytest.raises(DataError, match="own collate_fn"):
        fitted(tiny_vit(), loader, cfg, transform=processor)


def array_datasets() -> dict[str, tuple[datasets.Dataset, list[torch.Tensor]]]:
    """Array columns of several kinds, each with the CHW float tensors its rows must become."""
    rng = np.random.default_rng(0)
    chw = rng.standard_normal((9, 3, 5, 4)).astype(np.float32)
    hwc = rng.integers(0, 256, (9, 5, 4, 3), dtype=np.uint8)
    labels = [i % 3 for i in range(9)]
    plain = datasets.Dataset.from_dict({"pixel_values": list(chw), "labels": labels})
    array3d = datasets.Features(
        {"pixel_values": datasets.Array3D((3, 5, 4), "float32"), "labels": datasets.ClassLabel(num_classes=3)}
    )
    ragged = [chw[i] if i % 2 else chw[i][:, :4, :3] for i in range(9)]  # rows of two shapes
    order = datasets.concatenate_datasets([plain.select(range(4)), plain.select(range(4, 9))]).shuffle(seed=1)
    as_float = [torch.from_numpy(a.copy()) for a in chw]
    return {
        "float32 CHW lists": (plain, as_float),
        # Stored integers are used as they are (0-255, as datasets' NumPy formatting gives them); HWC becomes CHW.
        "uint8 HWC lists": (
            datasets.Dataset.from_dict({"pixel_values": list(hwc), "labels": labels}),
            [torch.from_numpy(a.copy()).permute(2, 0, 1).float() for a in hwc],
        ),
        "Array3D": (datasets.Dataset.from_dict({"pixel_values": list(chw), "labels": labels}, array3d), as_float),
        "two chunks, shuffled, torch format": (
            order.with_format("torch"),
            [torch.tensor(rows, dtype=torch.float32) for rows in order.with_format(None)["pixel_values"]],
        ),
        "ragged rows": (
            datasets.Dataset.from_dict({"pixel_values": ragged, "labels": labels}),
            [torch.from_numpy(a.copy()) for a in ragged],
        ),
    }


@pytest.mark.parametrize("kind", list(array_datasets()))
def test_array_columns_are_read_from_arrow_in_their_stored_dtype(kind: str) -> None:
    from hf_verifix.data.source import _row_arrays, _stacked_arrays, as_source

    data, expected = array_datasets()[kind]
    labels = data.with_format(None)["labels"]
    dataset = as_source(data, nn.Conv2d(3, 2, 1)).dataset
    positions = [7, 0, 3, 3, 8, 1]
    for samples in (dataset.__getitems__(positions), [dataset[i] for i in positions]):  # a batch, or row by row
        assert [label for _, label in samples] == [labels[i] for i in positions]
        for (image, _), i in zip(samples, positions, strict=True):
            assert image.dtype == torch.float32 and torch.equal(image, expected[i])
    column = data.with_format("arrow")[positions].column("pixel_values")
    stacked = _stacked_arrays(column)
    assert (stacked is None) == (kind == "ragged rows")  # one buffer per batch whenever the rows allow it
    assert all(row.flags.writeable for row in _row_arrays(column))  # a transform may write into what it gets
    if stacked is not None:  # through the DataLoader: every sample, in order
        read = list(as_source(data, nn.Conv2d(3, 2, 1), batch_size=4).batches())
        assert torch.equal(torch.cat([b.inputs for b in read]), torch.stack(expected))
        assert torch.cat([b.labels for b in read]).tolist() == labels


def test_a_dataset_numbering_the_models_classes_in_another_order_is_refused_until_aligned() -> None:
    import timm

    names = ["cat", "dog", "bird"]
    model = tiny_vit()
    model.config.id2label, model.config.label2id = dict(enumerate(names)), {n: i for i, n in enumerate(names)}
    images, labels = rgb_and_gray_images(9, size=16), [i % 3 for i in range(9)]

    def data(order: list[str]) -> datasets.Dataset:
        features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=order)})
        return datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)

    shuffled = data(["Dog", "cat", "bird"])  # case is ignored, as align_labels_with_mapping ignores it
    with pytest.raises(
        DataError,
        match=r"numbers the model's classes in another order: dataset class 0: 'Dog' "
        r"\(model: 'cat'\); 1: 'cat' \(model: 'dog'\).*align_labels_with_mapping\(model.config",
    ):
        fitted(model, shuffled, config(n_trusted=3))
    aligned = shuffled.align_labels_with_mapping(model.config.label2id, "label")
    assert aligned["label"] == [1, 0, 2] * 3  # every "Dog" (0) is now the model's dog (1)
    assert fitted(model, aligned, config(n_trusted=3)).trusted_indices.numel() == 3
    # Nothing to compare, nothing refused: the same order, other names, placeholder names, a model without names.
    fitted(model, data(names), config(n_trusted=3))
    fitted(model, data(["a", "b", "c"]), config(n_trusted=3))
    fitted(tiny_vit(), shuffled, config(n_trusted=3))  # id2label is LABEL_0..LABEL_2
    timm_model = timm.create_model("test_resnet", pretrained=False, num_classes=3)
    timm_model.pretrained_cfg = {**timm_model.pretrained_cfg, "label_names": names}
    with pytest.raises(DataError, match="another order"):
        fitted(timm_model, shuffled, config(n_trusted=3))


def test_an_empty_array_row_is_refused_by_name() -> None:
    from hf_verifix.data.source import as_source

    data = datasets.Dataset.from_dict({"pixel_values": [[[1.0, 2.0]], [], [[3.0, 4.0]]], "labels": [0, 1, 0]})
    dataset = as_source(data, nn.Conv2d(1, 2, 1)).dataset
    assert torch.equal(dataset[0][0], torch.tensor([[[1.0, 2.0]]]))
    with pytest.raises(DataError, match=r"got an empty image \(shape \(0,\)\); every sample needs its pixels"):
        dataset.__getitems__([0, 1])


def test_a_uint8_array_column_reaches_the_transform_unscaled() -> None:
    from hf_verifix.data.source import as_source

    pixels = np.random.default_rng(2).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    data = datasets.Dataset.from_dict({"pixel_values": list(pixels), "labels": [0, 1, 2, 0]})
    processor = ViTImageProcessor(size={"height": 8, "width": 8})  # rescales by 1/255 itself, then normalises
    dataset = as_source(data, nn.Conv2d(3, 2, 1), transform=processor).dataset
    for i, (image, _) in enumerate(dataset.__getitems__([0, 1, 2, 3])):
        expected = processor(images=pixels[i].astype(np.float32).transpose(2, 0, 1), return_tensors="pt")
        torch.testing.assert_close(image, expected["pixel_values"][0], rtol=0, atol=1e-6)
        assert float(image.max() - image.min()) > 1.0  # not rescaled twice (that leaves a near-constant image)


@pytest.mark.parametrize(
    ("dtype", "rtol"),
    [
        # float64 model: only the order of the float64 Gram sums depends on the batching.
        (torch.float64, 1e-10),
        # float32 model: its activations are computed in batches of another shape, so they (and the float32
        # projected weights) may differ in the last bits.
        (torch.float32, 1e-6),
    ],
)
def test_unshuffled_dataloader_matches_the_tensor_dataset_and_a_shuffled_one_is_refused(
    tiny_images: TensorDataset, dtype: torch.dtype, rtol: float
) -> None:
    data = TensorDataset(tiny_images.tensors[0].to(dtype), tiny_images.tensors[1])
    reference = fitted(small_cnn().to(dtype), data, config(batch_size=64))
    loader = DataLoader(data, batch_size=7, shuffle=False)
    assert_same_correction(fitted(small_cnn().to(dtype), loader), reference, rtol=rtol)
    trusted = [1, 5, 9, 20]
    assert_same_correction(
        fitted(small_cnn().to(dtype), loader, trusted_indices=trusted),
        fitted(small_cnn().to(dtype), data, trusted_indices=trusted),
        rtol=rtol,
    )
    with pytest.raises(DataError, match=r"RandomSampler.*shuffle=False"):
        fitted(small_cnn().to(dtype), DataLoader(data, batch_size=7, shuffle=True))
