"""Real architectures end to end, uncorrectable layers, and ``save_pretrained`` round trips (hf_verifix.models).

timm ResNet / Inception-ResNet-v2 / ViT and a transformers ViT, all tiny, random (``pretrained=False``) and seeded;
layers the projection cannot correct are refused by default, and with ``on_uncorrectable="skip"`` skipped with a
warning and left alone; corrected models are saved in their own format and reload natively. Everything runs offline
on a CPU (see conftest.py). The data paths into ``fit`` are in test_data_source.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import timm
import torch
from safetensors.torch import load_model
from testing_utils import quick_config as config
from testing_utils import small_cnn, tiny_vit, weights_of
from timm.layers import Conv2dSame, ConvNormAct, StdConv2d
from torch import nn
from torch.utils.data import TensorDataset
from transformers import ViTForImageClassification

from hf_verifix import CorrectionConfig, ProjectionCorrector
from hf_verifix.errors import LayerError

# A huge alpha keeps lambda ~ 1 on every direction the trusted inputs span and 0 on the rest: each layer's outputs
# on the trusted inputs are then unchanged, which only holds if the rows were unfolded exactly like the weight.
KEEP_ALPHA = 1e12

# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


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
    deficient = [n for n in names if bool((corrector.projections[n].normalized < 1e-13).any())]
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
# 6. save_pretrained round trips
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


def test_record_preprocessing_refuses_other_models_and_a_channel_count_mismatch() -> None:
    import timm

    from hf_verifix import InputTypeError, record_preprocessing
    from hf_verifix.errors import ConfigError

    with pytest.raises(InputTypeError, match=r"got a Linear \(plain\).*processor\.save_pretrained"):
        record_preprocessing(nn.Linear(2, 2), (1, 28, 28), (0.5,), (0.5,))
    model = timm.create_model("test_resnet", pretrained=False, in_chans=1)
    with pytest.raises(ConfigError, match=r"one value per input channel \(1, .*got mean=\(0\.5, 0\.5\)"):
        record_preprocessing(model, (1, 28, 28), (0.5, 0.5), (0.5,))
    assert model.pretrained_cfg["input_size"] == (3, 160, 160) and "hf_hub_id" in model.pretrained_cfg  # unchanged


def test_a_text_classifier_is_refused_before_any_data_is_read(tmp_path) -> None:
    from transformers import BertConfig, BertForSequenceClassification, TrainerControl, TrainerState, TrainingArguments

    from hf_verifix import InputTypeError, ProjectionCorrector, SAPCallback

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, num_labels=2
    )
    model = BertForSequenceClassification(config)
    before = {k: v.clone() for k, v in model.state_dict().items()}

    class Unread(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 8

        def __getitem__(self, index: int):
            raise AssertionError("no data may be read")

    with pytest.raises(InputTypeError, match=r"takes 'input_ids', not images.*Text classifiers are not supported"):
        ProjectionCorrector(model, n_trusted=4, progress=False).fit(Unread())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    with pytest.raises(InputTypeError, match="input_ids"):  # before the first training step
        SAPCallback().on_train_begin(args, TrainerState(), TrainerControl(), model=model)
