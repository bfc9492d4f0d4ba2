"""Each model's own preprocessing (hf_verifix.data.images.default_image_transform): never another family's defaults.

An HF ResNet normalises with ImageNet's mean and std after a shortest-edge resize; a ViT with 0.5/0.5 at a fixed
size. Guessing one for the other silently corrupts every Gram, so a transformers model uses the image processor
saved with it, a ViT without one gets ViT's documented defaults, and any other is refused with the fix.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from testing_utils import tiny_vit
from transformers import ConvNextImageProcessor, ResNetConfig, ResNetForImageClassification

from hf_verifix.data.images import default_image_transform
from hf_verifix.errors import DataError


def _tiny_resnet() -> ResNetForImageClassification:
    torch.manual_seed(0)
    config = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=3)
    return ResNetForImageClassification(config)


def _image() -> Image.Image:
    pixels = np.random.default_rng(0).integers(0, 256, size=(40, 48, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def test_a_transformers_model_without_a_saved_processor_is_refused_with_the_fix() -> None:
    with pytest.raises(DataError, match=r"ResNetForImageClassification \(model_type 'resnet'\).*AutoImageProcessor"):
        default_image_transform(_tiny_resnet())


def test_the_processor_saved_with_the_model_is_its_preprocessing(tmp_path) -> None:
    processor = ConvNextImageProcessor(size={"shortest_edge": 32}, image_mean=[0.1, 0.2, 0.3], image_std=[0.5] * 3)
    _tiny_resnet().save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    model = ResNetForImageClassification.from_pretrained(tmp_path)
    transform = default_image_transform(model)
    expected = processor(images=_image(), return_tensors="pt")["pixel_values"][0]
    got = transform(_image())["pixel_values"][0]
    assert torch.equal(got, expected) and got.shape == (3, 32, 32)


def test_a_vit_without_a_processor_gets_vits_defaults() -> None:
    from torchvision.transforms import functional as TF

    tensor = default_image_transform(tiny_vit())(_image())  # a 16-px ViT
    resized = TF.to_tensor(TF.resize(_image(), [16, 16]))
    assert torch.equal(tensor, TF.normalize(resized, [0.5] * 3, [0.5] * 3))  # (x − 0.5) / 0.5, ViT's defaults
    assert float(tensor.min()) < 0  # normalised, not ToTensor's [0, 1]
