"""Real architectures end to end, the data paths into ``fit``, and ``save_pretrained`` round trips.

timm ResNet / Inception-ResNet-v2 / ViT and a transformers ViT, all tiny, random (``pretrained=False``) and seeded;
``datasets.Dataset`` (Image/ClassLabel columns, formats, preprocessed arrays, image processors) and ``DataLoader``
inputs checked against the equivalent ``TensorDataset``; layers the projection cannot correct are refused by
default, and with ``on_uncorrectable="skip"`` skipped with a warning and left alone. Everything runs offline on a
CPU (see conftest.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import load_model
from testing_utils import tiny_vit  # 2 layers, 32 wide, 16x16 images in 4x4 patches, 3 labels, seed 0
from timm.layers import Conv2dSame, ConvNormAct, StdConv2d
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchvision import transforms
from transformers import ViTForImageClassification, ViTImageProcessor

from hf_verifix import CorrectionConfig, ProjectionCorrector
from hf_verifix.errors import DataError, LayerError

# A huge alpha keeps lambda ~ 1 on every direction the trusted inputs span and 0 on the rest: each layer's outputs
# on the trusted inputs are then unchanged, which only holds if the rows were unfolded exactly like the weight.
KEEP_ALPHA = 1e12

# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def config(**overrides: Any) -> CorrectionConfig:
    return CorrectionConfig(**{"n_trusted": 8, "progress": False, **overrides})


def layer_names(model: nn.Module, types: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv2d)) -> set[str]:
    return {name for name, module in model.named_modules() if isinstance(module, types)}


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer (persistent or not), cloned."""
    tensors = {f"param {n}": p.detach().clone() for n, p in model.named_parameters()}
    tensors.update({f"buffer {n}": b.detach().clone() for n, b in model.named_buffers()})
    return tensors


def assert_same_tensors(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert actual.keys() == expected.keys()
    different = [k for k in expected if not torch.equal(actual[k], expected[k])]
    assert not different, f"not bit-identical: {different}"


def capture(model: nn.Module, names: Iterable[str], inputs: torch.Tensor) -> dict[str, tuple[torch.Tensor, ...]]:
    """Each named layer's (input, output) on ``inputs``, in eval mode without gradients."""
    modules = dict(model.named_modules())
    seen: dict[str, tuple[torch.Tensor, ...]] = {}

    def keep(name: str, args: tuple[Any, ...], output: torch.Tensor) -> None:
        seen.setdefault(name, (args[0].detach().clone(), output.detach().clone()))  # first call only

    handles = [
        modules[name].register_forward_hook(lambda _m, args, out, _n=name: keep(_n, args, out)) for name in names
    ]
    mode = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(inputs)
    finally:
        model.train(mode)
        for handle in handles:
            handle.remove()
    return seen


def expected_rows(output: torch.Tensor, layer: nn.Module) -> int:
    """Rows a layer multiplies its weight with: one per output position (conv) or per token (linear)."""
    if isinstance(layer, nn.Conv2d):
        return output.shape[0] * output.shape[-2] * output.shape[-1]
    return output.numel() // output.shape[-1]


def assert_trusted_outputs_kept(
    model: nn.Module, corrector: ProjectionCorrector, inputs: torch.Tensor, rtol: float = 1e-4
) -> None:
    """Each projected layer's rows are one per output position/token of the trusted inputs; after apply(KEEP_ALPHA)
    it maps those inputs as before while a layer whose trusted Gram is rank-deficient loses part of its weight (so
    the check is not passed by a no-op); revert restores every weight.
    """
    names = list(corrector.projections)
    before = capture(model, names, inputs)
    modules = dict(model.named_modules())
    weights = {n: modules[n].weight.detach().clone() for n in names}
    for name in names:
        assert corrector.layer_rows[name] == expected_rows(before[name][1], modules[name]), name
    deficient = [n for n in names if bool((corrector.projections[n].spectrum.normalized() < 1e-13).any())]
    assert deficient
    corrector.apply(alpha=KEEP_ALPHA)
    try:
        with torch.no_grad():
            for name in names:
                x, y = before[name]
                scale = float(y.abs().max())
                torch.testing.assert_close(modules[name](x), y, rtol=0, atol=rtol * scale, msg=name)
            for name in deficient:
                change = float((modules[name].weight - weights[name]).norm() / weights[name].norm())
                assert change > 1e-3, (name, change)
    finally:
        corrector.revert()
    for name in names:
        assert torch.equal(modules[name].weight, weights[name]), name


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


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3),
        nn.ReLU(),
        nn.Conv2d(6, 8, 3, stride=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 3),
    )


def weights_of(model: nn.Module, names: Iterable[str]) -> dict[str, torch.Tensor]:
    modules = dict(model.named_modules())
    return {n: modules[n].weight.detach().clone() for n in names}


def assert_close_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], rtol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for name in a:
        if rtol == 0.0:
            assert torch.equal(a[name], b[name]), name
        else:
            scale = float(b[name].abs().max())
            torch.testing.assert_close(a[name], b[name], rtol=0, atol=rtol * scale, msg=name)


# ---------------------------------------------------------------------------------------------
# 1. timm ResNet
# ---------------------------------------------------------------------------------------------


def test_timm_resnet_projects_every_conv_and_the_classifier_and_reverts_bit_exactly(
    tiny_images: TensorDataset,
) -> None:
    model = timm.create_model("test_resnet", pretrained=False, num_classes=3)
    assert model.training
    before = snapshot(model)
    corrector = ProjectionCorrector(model, config(recalibrate_batchnorm=True)).fit(tiny_images)

    assert corrector.skipped == {}
    assert set(corrector.projections) == layer_names(model) - set(corrector.skipped)
    assert layer_names(model, (nn.Conv2d,)) <= set(corrector.projections)
    assert model.pretrained_cfg["classifier"] in corrector.projections
    assert_same_tensors(snapshot(model), before)  # fit alone changes nothing

    corrector.apply(alpha=3e4)
    after = snapshot(model)
    for name in corrector.projections:
        assert not torch.equal(after[f"param {name}.weight"], before[f"param {name}.weight"]), name
    bn_stats = [k for k in before if k.startswith("buffer ") and k.endswith(("running_mean", "running_var"))]
    assert len(bn_stats) == 2 * len(layer_names(model, (nn.BatchNorm2d,))) > 0
    assert all(not torch.equal(after[k], before[k]) for k in bn_stats)  # recalibrated on the trusted samples
    projected_weights = {f"param {name}.weight" for name in corrector.projections}
    untouched = [k for k in before if k.startswith("param ") and k not in projected_weights]  # BN affine, biases
    assert untouched and all(torch.equal(after[k], before[k]) for k in untouched)

    corrector.revert()
    assert_same_tensors(snapshot(model), before)
    assert model.training and all(m.training for m in model.modules())

    x = tiny_images.tensors[0][corrector.trusted_indices]
    assert_trusted_outputs_kept(model, corrector, x)
    assert_same_tensors(snapshot(model), before)


# ---------------------------------------------------------------------------------------------
# 2. Inception-ResNet-v2: asymmetric 1x7 / 7x1 / 1x3 / 3x1 kernels
# ---------------------------------------------------------------------------------------------


def inception_like_net() -> nn.Module:
    """Inception-ResNet-v2's asymmetric convolutions (timm ConvNormAct, same kernels and paddings), in small."""
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = ConvNormAct(3, 8, kernel_size=3, stride=2)
            self.branch0 = ConvNormAct(8, 6, kernel_size=1)
            self.branch17 = nn.Sequential(
                ConvNormAct(8, 6, kernel_size=(1, 7), stride=1, padding=(0, 3)),
                ConvNormAct(6, 6, kernel_size=(7, 1), stride=1, padding=(3, 0)),
            )
            self.branch8 = nn.Sequential(
                ConvNormAct(8, 6, kernel_size=(1, 3), stride=1, padding=(0, 1)),
                ConvNormAct(6, 6, kernel_size=(3, 1), stride=1, padding=(1, 0)),
            )
            self.same = nn.Conv2d(18, 8, kernel_size=(2, 4), padding="same", dilation=(1, 2))
            self.classif = nn.Linear(8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.stem(x)
            x = torch.cat([self.branch0(x), self.branch17(x), self.branch8(x)], dim=1)
            return self.classif(torch.relu(self.same(x)).mean(dim=(2, 3)))

    return Net()


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths:UserWarning")
def test_asymmetric_kernels_are_unfolded_like_their_weights() -> None:
    model = inception_like_net()
    generator = torch.Generator().manual_seed(1)
    data = TensorDataset(torch.randn(12, 3, 23, 19, generator=generator), torch.arange(12) % 3)
    corrector = ProjectionCorrector(model, config(n_trusted=6)).fit(data)
    assert corrector.skipped == {}
    assert set(corrector.projections) == layer_names(model)
    modules = dict(model.named_modules())
    kernels = {modules[n].kernel_size for n in corrector.projections if isinstance(modules[n], nn.Conv2d)}
    assert {(1, 7), (7, 1), (1, 3), (3, 1), (2, 4)} <= kernels
    assert_trusted_outputs_kept(model, corrector, data.tensors[0][corrector.trusted_indices])


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_inception_resnet_v2_projects_every_conv_and_the_classifier() -> None:
    # ~2 min and ~6 GB on 2 idle CPU cores (12 min on a loaded machine): 245 float64 Grams up to 2880x2880.
    torch.manual_seed(0)
    model = timm.create_model("inception_resnet_v2", pretrained=False, num_classes=3)
    size = 75  # the smallest input it accepts (74 leaves a 2x2 map for a 3x3 valid convolution)
    with pytest.raises(RuntimeError, match="Kernel size can't be greater"), torch.no_grad():
        model.eval()(torch.zeros(1, 3, size - 1, size - 1))
    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(6, 3, size, size, generator=generator), torch.arange(6) % 3)
    corrector = ProjectionCorrector(model, config(n_trusted=4)).fit(data)

    assert corrector.skipped == {}
    convs = layer_names(model, (nn.Conv2d,))
    assert len(convs) == 244
    assert set(corrector.projections) == convs | {"classif"}
    modules = dict(model.named_modules())
    kernels = {modules[n].kernel_size for n in convs}
    assert {(1, 7), (7, 1), (1, 3), (3, 1)} <= kernels
    assert_trusted_outputs_kept(model, corrector, data.tensors[0][corrector.trusted_indices])


# ---------------------------------------------------------------------------------------------
# 3. transformers ViT
# ---------------------------------------------------------------------------------------------


def test_transformers_vit_projects_attention_mlp_patch_conv_and_classifier_with_one_row_per_token() -> None:
    model = tiny_vit()
    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(10, 3, 16, 16, generator=generator), torch.arange(10) % 3)
    n_trusted = 6
    corrector = ProjectionCorrector(model, config(n_trusted=n_trusted)).fit(data)

    linears = layer_names(model, (nn.Linear,))
    convs = layer_names(model, (nn.Conv2d,))
    assert corrector.skipped == {}
    assert set(corrector.projections) == linears | convs
    per_layer = 4 + 2  # q, k, v, o and the two MLP layers, whatever they are called
    assert len(linears) == per_layer * model.config.num_hidden_layers + 1
    assert len(convs) == 1

    cfg = model.config
    patches = (cfg.image_size // cfg.patch_size) ** 2
    classifier = next(n for n, m in model.named_modules() if m is model.classifier)
    (patch_conv,) = convs
    assert corrector.layer_rows[patch_conv] == n_trusted * patches
    assert corrector.layer_rows[classifier] == n_trusted  # the [CLS] token only
    for name in linears - {classifier}:
        assert corrector.layer_rows[name] == n_trusted * (patches + 1), name

    assert_trusted_outputs_kept(model, corrector, data.tensors[0][corrector.trusted_indices])


# ---------------------------------------------------------------------------------------------
# 4. timm ViT: fused qkv
# ---------------------------------------------------------------------------------------------


def test_timm_vit_fused_qkv_is_projected_per_token_and_loses_only_untrusted_directions() -> None:
    torch.manual_seed(0)
    model = timm.create_model("test_vit", pretrained=False, num_classes=3, img_size=32).eval()
    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(10, 3, 32, 32, generator=generator), torch.arange(10) % 3)
    n_trusted = 6
    corrector = ProjectionCorrector(model, config(n_trusted=n_trusted)).fit(data)

    assert corrector.skipped == {}
    assert set(corrector.projections) == layer_names(model)
    qkv = [f"{n}.qkv" for n, m in model.named_modules() if isinstance(getattr(m, "qkv", None), nn.Linear)]
    modules = dict(model.named_modules())
    assert len(qkv) == len(model.blocks) and set(qkv) <= set(corrector.projections)
    assert all(modules[n].out_features == 3 * modules[n].in_features == 3 * model.embed_dim for n in qkv)
    tokens = model.patch_embed.num_patches + model.num_prefix_tokens
    assert tokens == 5
    for name in qkv:
        assert corrector.layer_rows[name] == n_trusted * tokens

    x = data.tensors[0][corrector.trusted_indices]
    inputs = capture(model, qkv, x)
    original = weights_of(model, qkv)
    corrector.apply(alpha=KEEP_ALPHA)
    projected = weights_of(model, qkv)
    corrector.revert()
    for name in qkv:
        rows = inputs[name][0].reshape(-1, model.embed_dim).double()  # (n_trusted * tokens, D) = (30, 64)
        _, s, vh = torch.linalg.svd(rows, full_matrices=True)
        rank = int((s > s[0] * 1e-6).sum())
        # At most 30 directions (the [CLS] rows of the first block are all the same), well separated from 0.
        assert rank <= n_trusted * tokens < model.embed_dim
        assert s[rank - 1] > 1e-4 * s[0] and (rank == len(s) or s[rank] < 1e-10 * s[0])
        span, null = vh[:rank].T, vh[rank:].T
        w, w_hat = original[name].double(), projected[name].double()
        # q, k and v (all 3D rows) keep their action on the trusted span and lose it on the rest.
        torch.testing.assert_close(w_hat @ span, w @ span, rtol=0, atol=1e-4 * float(w.abs().max()))
        assert float((w_hat @ null).norm()) < 1e-4 * float((w @ null).norm())


# ---------------------------------------------------------------------------------------------
# 5. layers the projection cannot correct
# ---------------------------------------------------------------------------------------------


def test_conv2d_same_and_std_conv2d_are_skipped_with_a_warning_and_left_alone(tiny_images: TensorDataset) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        Conv2dSame(8, 8, 3, stride=2),
        nn.ReLU(),
        StdConv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 3),
    )
    before = snapshot(model)
    with pytest.raises(LayerError, match=r"refusing .* 2 targeted layer\(s\).*'2': Conv2dSame .*'4': StdConv2d "):
        ProjectionCorrector(model, config()).fit(tiny_images)  # the default: refused before any work
    with pytest.warns(UserWarning, match=r"leaving 2 layer\(s\) uncorrected: '2': Conv2dSame .*'4': StdConv2d "):
        corrector = ProjectionCorrector(model, config(on_uncorrectable="skip")).fit(tiny_images)
    assert set(corrector.skipped) == {"2", "4"}
    assert all("overrides Conv2d.forward" in reason for reason in corrector.skipped.values())
    assert set(corrector.projections) == {"0", "8"}

    corrector.apply(alpha=3e4)
    after = snapshot(model)
    for name in ("2", "4"):
        assert torch.equal(after[f"param {name}.weight"], before[f"param {name}.weight"])
    for name in ("0", "8"):
        assert not torch.equal(after[f"param {name}.weight"], before[f"param {name}.weight"])


class TokenNet(nn.Module):
    """A conv stem, self-attention over its positions (nn.MultiheadAttention) and a linear head."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 8, 8, stride=8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.stem(x).flatten(2).transpose(1, 2)
        mixed, _ = self.attn(tokens, tokens, tokens)
        return self.head(mixed.mean(dim=1))


def test_multihead_attention_out_proj_is_skipped_with_a_warning_and_left_alone(tiny_images: TensorDataset) -> None:
    model = TokenNet()
    before = snapshot(model)
    with pytest.raises(LayerError, match=r"'attn\.out_proj': nn\.MultiheadAttention uses out_proj\.weight"):
        ProjectionCorrector(model, config()).fit(tiny_images)  # the default: refused before any work
    with pytest.warns(UserWarning, match=r"'attn\.out_proj': nn\.MultiheadAttention uses out_proj\.weight"):
        corrector = ProjectionCorrector(model, config(on_uncorrectable="skip")).fit(tiny_images)
    assert set(corrector.skipped) == {"attn.out_proj"}
    assert set(corrector.projections) == {"stem", "head"}

    corrector.apply(alpha=3e4)
    after = snapshot(model)
    for key in ("param attn.in_proj_weight", "param attn.out_proj.weight"):
        assert torch.equal(after[key], before[key]), key
    for name in ("stem", "head"):
        assert not torch.equal(after[f"param {name}.weight"], before[f"param {name}.weight"])


# ---------------------------------------------------------------------------------------------
# 6. data paths
# ---------------------------------------------------------------------------------------------


def fitted(model: nn.Module, data: Any, cfg: CorrectionConfig | None = None, **fit_kwargs: Any) -> ProjectionCorrector:
    return ProjectionCorrector(model, cfg or config()).fit(data, **fit_kwargs)


def assert_same_correction(a: ProjectionCorrector, b: ProjectionCorrector, rtol: float = 0.0) -> None:
    """Same trusted set, same Gram spectra and the same projected weights."""
    assert torch.equal(a.trusted_indices, b.trusted_indices)
    assert a.projections.keys() == b.projections.keys()
    assert a.layer_rows == b.layer_rows
    for name in a.projections:
        va, vb = a.projections[name].spectrum.eigenvalues, b.projections[name].spectrum.eigenvalues
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
    hf = datasets.Dataset.from_dict(
        {"image": images, "label": labels},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=3)}),
    )
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
    hf = datasets.Dataset.from_dict(
        {"image": images, "label": labels},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=3)}),
    )
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


# ---------------------------------------------------------------------------------------------
# 7. save_pretrained round trips
# ---------------------------------------------------------------------------------------------


def assert_saved_folder(path: Path, corrector: ProjectionCorrector, cfg: CorrectionConfig) -> None:
    assert CorrectionConfig.load(path) == cfg
    report = json.loads((path / "correction_report.json").read_text())
    assert report["applied_alpha"] == corrector.applied_alpha
    assert set(report["layers"]) == set(corrector.projections)
    assert not [p for p in path.iterdir() if p.name.startswith(".verifix-")]  # no staging folder left


def test_transformers_vit_round_trips_through_from_pretrained(tmp_path: Path) -> None:
    model = tiny_vit()
    original = {k: v.clone() for k, v in model.state_dict().items()}
    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(10, 3, 16, 16, generator=generator), torch.arange(10) % 3)
    cfg = config(n_trusted=6, alpha=1e3)
    corrector = ProjectionCorrector(model, cfg).fit(data)
    corrector.apply()
    corrected = model.state_dict()
    assert not torch.equal(corrected["classifier.weight"], original["classifier.weight"])

    corrector.save_pretrained(tmp_path)
    reloaded = ViTForImageClassification.from_pretrained(tmp_path)
    assert_same_tensors(reloaded.state_dict(), corrected)
    assert reloaded.config.num_labels == 3
    assert_saved_folder(tmp_path, corrector, cfg)


def test_timm_resnet_round_trips_through_local_dir(tmp_path: Path, tiny_images: TensorDataset) -> None:
    model = timm.create_model("test_resnet", pretrained=False, num_classes=3)
    cfg = config(alpha=1e3, target_modules=["fc", r"conv1\.0"])
    corrector = ProjectionCorrector(model, cfg).fit(tiny_images)
    assert set(corrector.projections) == {"fc", "conv1.0"}
    corrector.apply()

    corrector.save_pretrained(tmp_path)
    reloaded = timm.create_model(f"local-dir:{tmp_path}", pretrained=True)
    assert type(reloaded) is type(model) and reloaded.num_classes == 3
    assert_same_tensors(reloaded.state_dict(), model.state_dict())
    assert_saved_folder(tmp_path, corrector, cfg)


def test_plain_module_round_trips_through_safetensors(tmp_path: Path, tiny_images: TensorDataset) -> None:
    model = small_cnn()
    cfg = config(alpha=1e3)
    corrector = ProjectionCorrector(model, cfg).fit(tiny_images)
    corrector.apply()
    corrector.save_pretrained(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {
        "model.safetensors",
        "correction_config.json",
        "correction_report.json",
    }

    fresh = small_cnn()
    fresh[0].weight.data.zero_()
    load_model(fresh, tmp_path / "model.safetensors")
    assert_same_tensors(fresh.state_dict(), model.state_dict())
    assert_saved_folder(tmp_path, corrector, cfg)
