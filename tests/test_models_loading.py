"""Loading models by Hub ID or local path (hf_verifix.models.loading, through the hf_verifix.hub facade).

By ID from an HF cache seeded offline (conftest.py's session-scoped ``work``), local folders, bare weights files and
checkpoints, and safe loading: pickles that need code and repository code are refused, never run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from testing_utils import SNAPSHOT
from testing_utils import safetensors_weights as _weights

from hf_verifix.hub import LoadError, load_model

# Tiny models run as fast on one thread, and stay fast when other jobs share the CPU (conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")


def test_load_by_id_from_a_seeded_cache_with_the_hub_offline(work, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(work["cache"]))  # what HF_HUB_CACHE / HF_HOME set at import
    vit = load_model("org/tiny-vit")
    assert (vit.library, vit.repo_id, vit.revision, vit.num_classes) == ("transformers", "org/tiny-vit", SNAPSHOT, 3)
    assert type(vit.processor).__name__.startswith("ViTImageProcessor")
    from transformers import AutoModelForImageClassification

    original = AutoModelForImageClassification.from_pretrained(work["vit"]).state_dict()
    assert all(torch.equal(vit.model.state_dict()[k], v) for k, v in original.items())

    original = _weights(work["timm"])
    for model_id in ("hf-hub:timm/tiny-resnet", "timm/tiny-resnet", f"hf-hub:timm/tiny-resnet@{SNAPSHOT}"):
        resnet = load_model(model_id, cache_dir=work["cache"])
        assert (resnet.library, resnet.repo_id, resnet.num_classes) == ("timm", "timm/tiny-resnet", 3)
        assert all(torch.equal(resnet.model.state_dict()[k], v) for k, v in original.items())

    with pytest.raises(LoadError, match="HF_HUB_OFFLINE=1"):
        load_model("org/not-cached", cache_dir=work["cache"])
    with pytest.raises(LoadError, match="neither an existing local path nor a valid Hub model ID"):
        load_model("./no/such/folder")


def test_local_folders_checkpoints_and_safe_loading(work, tmp_path):
    folder = load_model(work["timm"])
    assert folder.library == "timm" and folder.repo_id is None
    state = folder.model.state_dict()
    # A bare weights file with its timm architecture; classes are read from the classifier's shape.
    from safetensors.torch import save_file

    save_file(state, str(tmp_path / "weights.safetensors"))
    loaded = load_model(tmp_path / "weights.safetensors", architecture="test_resnet")
    assert loaded.num_classes == 3 and all(torch.equal(loaded.model.state_dict()[k], v) for k, v in state.items())
    torch.save({"state_dict": state}, tmp_path / "checkpoint.pth")
    assert load_model(tmp_path / "checkpoint.pth", architecture="test_resnet").num_classes == 3
    with pytest.raises(LoadError, match=r"architecture=.resnet18."):
        load_model(tmp_path / "checkpoint.pth")
    # A pickle that needs code is refused by torch.load(weights_only=True), never executed.
    torch.save({"state_dict": state, "extra": Path("x")}, tmp_path / "unsafe.pth")
    with pytest.raises(LoadError, match="weights_only=True"):
        load_model(tmp_path / "unsafe.pth", architecture="test_resnet")

    # Remote code is never run unless asked for.
    custom = tmp_path / "custom"
    custom.mkdir()
    marker = tmp_path / "code-ran"
    (custom / "config.json").write_text(
        json.dumps({"model_type": "verifix-custom", "auto_map": {"AutoConfig": "configuration.C",
                    "AutoModelForImageClassification": "modeling.M"}})
    )  # fmt: skip
    for name in ("configuration.py", "modeling.py"):
        (custom / name).write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    with pytest.raises(LoadError, match="trust_remote_code=True"):
        load_model(custom)
    assert not marker.exists()
