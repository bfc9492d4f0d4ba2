"""Which layers can be corrected (hf_verifix.statistics.layers): adapter wrappers such as peft's LoRA layers.

A LoRA layer's forward is base(x) + B·A·x·scale: correcting its base weight (or its A and B) as separate layers
edits frozen weights and saves a model that does not reload equal. Such models are refused before anything runs,
with the fix (merge the adapters); merged, they are corrected like any other model.
"""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from testing_utils import tiny_vit
from torch.utils.data import TensorDataset
from transformers import TrainerControl, TrainerState, TrainingArguments

from hf_verifix import CorrectionConfig, ProjectionCorrector, SAPCallback
from hf_verifix.errors import LayerError

# peft (0.21) calls a transformers method that transformers 5 deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")


def _lora_vit() -> torch.nn.Module:
    model = get_peft_model(tiny_vit(0), LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    return model


def _data() -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(24, 3, 16, 16, generator=generator)
    return TensorDataset(images, torch.randint(0, 3, (24,), generator=generator))


def _config(**overrides) -> CorrectionConfig:
    return CorrectionConfig(n_trusted=12, progress=False, **overrides)


def test_a_lora_model_is_refused_before_anything_runs_with_the_merge_fix() -> None:
    model = _lora_vit()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(LayerError) as info:
        ProjectionCorrector(model, _config()).fit(_data())
    message = str(info.value)
    assert "12 targeted layer(s) cannot be corrected exactly" in message  # 2 blocks × (q, v) × 3 layers
    assert "adapter wrapper (Linear, e.g. a peft LoRA layer)" in message and "merge_and_unload()" in message
    assert "lora_A.default" in message and "base_layer" in message
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_skip_leaves_the_adapted_layers_exactly_and_corrects_the_others() -> None:
    model = _lora_vit()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.warns(UserWarning, match="adapter wrapper"):
        corrector = ProjectionCorrector(model, _config(on_uncorrectable="skip")).fit(_data())
    corrector.apply(3e4)
    after = model.state_dict()
    adapted = [k for k in before if ".q_proj." in k or ".v_proj." in k]
    assert adapted and all(torch.equal(after[k], before[k]) for k in adapted)
    changed = [k for k in before if not torch.equal(after[k], before[k])]
    assert any(".k_proj." in k for k in changed) and any("classifier" in k for k in changed), changed


def test_the_merged_model_is_corrected_like_any_other() -> None:
    merged = _lora_vit().merge_and_unload()
    query = merged.vit.layers[0].attention.q_proj.weight.detach().clone()
    corrector = ProjectionCorrector(merged, _config()).fit(_data())
    assert "vit.layers.0.attention.q_proj" in corrector.projections
    corrector.apply(1.0)  # α = 1 keeps λ = σ̃ < 1: every weight changes
    assert not torch.equal(merged.vit.layers[0].attention.q_proj.weight, query)


def test_the_trainer_callback_refuses_a_lora_model_before_training(tmp_path) -> None:
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    with pytest.raises(LayerError, match=r"merge_and_unload\(\)"):
        SAPCallback(_config()).on_train_begin(args, TrainerState(), TrainerControl(), model=_lora_vit())
