"""Reliability of what the corrector writes: the user's weights, output folders, and the values it computes.

Each test here failed before the fix it names (issue "Reliability", sections 2, 3 and 5).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from hf_verifix import CorrectionConfig, ProjectionCorrector
from hf_verifix.errors import ConfigError, DataError, NumericalError, VerifixError
from hf_verifix.hub import push_to_hub, save_corrected
from hf_verifix.projection.spectrum import decompose, importance_scaling
from hf_verifix.projection.update import LayerProjection
from hf_verifix.selection import base as selection_base
from hf_verifix.utils.staging import staged_directory

U64 = torch.finfo(torch.float64).eps / 2
EPS32 = torch.finfo(torch.float32).eps


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


def data(n: int = 40, seed: int = 0) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 4, generator=generator), torch.arange(n) % 3)


def corrector_for(model: nn.Module, **overrides) -> ProjectionCorrector:
    return ProjectionCorrector(model, CorrectionConfig(n_trusted=12, progress=False, **overrides))


def sgd_steps(model: nn.Module, dataset: TensorDataset, steps: int = 5) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = dataset.tensors
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_state_equal(model: nn.Module, expected: dict[str, torch.Tensor]) -> None:
    for key, value in model.state_dict().items():
        assert torch.equal(value, expected[key]), key


# ------------------------------------------------------------------------------------------ the user's weights


def test_fit_after_training_keeps_the_trained_weights_and_fits_them():
    model, train = mlp(), data()
    corrector = corrector_for(model).fit(train)
    sgd_steps(model, train)
    trained = state(model)
    corrector.fit(train)  # it used to write the fit-time weights back first: a mix of old weights and new biases
    assert_state_equal(model, trained)
    modules = dict(model.named_modules())
    for name in corrector.projections:
        assert torch.equal(corrector._state.weights[name], modules[name].weight)
    corrector.apply(1e4)
    assert torch.equal(corrector.revert()[0].weight, trained["0.weight"])


@pytest.mark.parametrize("action", ["apply", "revert", "search_alpha"])
def test_a_model_changed_after_fit_is_never_overwritten(action):
    model, train = mlp(), data()
    corrector = corrector_for(model).fit(train)
    if action == "revert":
        corrector.apply(1e3)
    sgd_steps(model, train)
    trained = state(model)
    call = {
        "apply": lambda: corrector.apply(1e3),
        "revert": corrector.revert,
        "search_alpha": lambda: corrector.search_alpha(train, alphas=[10.0, 1e4]),
    }[action]
    with pytest.raises(VerifixError, match=rf"{action} would overwrite .*changed since.*fit\(train_data\) again"):
        call()
    assert_state_equal(model, trained)


def test_an_edit_of_one_weight_after_fit_is_refused_too():
    model = mlp()
    corrector = corrector_for(model).fit(data())
    with torch.no_grad():
        model[2].weight[0, 0] += 1.0
    edited = state(model)
    with pytest.raises(VerifixError, match=r"'2\.weight'"):
        corrector.apply(1e3)
    assert_state_equal(model, edited)


def test_apply_revert_and_reports_keep_working_while_nothing_else_changes_the_model(tmp_path):
    model, train = mlp(), data()
    original = state(model)
    corrector = corrector_for(model).fit(train)
    corrector.search_alpha(train, alphas=[10.0, 1e4])
    corrector.apply(1e2)
    corrector.evaluate(train, alpha=1e4)  # projects, then restores the weights itself
    corrector.result(eval_data=train)  # evaluates the original and the current model, restoring the weights
    corrector.apply(1e5)
    assert_state_equal(corrector.revert(), original)


# ------------------------------------------------------------------------------------------ output folders

HAND_WRITTEN = ["correction_config.json", "correction_report.json", "report.md", "alpha_curve.png"]


@pytest.mark.parametrize("name", HAND_WRITTEN)
def test_save_corrected_replaces_no_file_without_overwrite(tmp_path, name):
    corrector = corrector_for(mlp()).fit(data())
    (tmp_path / name).write_text("mine\n")
    with pytest.raises(FileExistsError, match=rf"{name}.*overwrite"):
        save_corrected(corrector, tmp_path)
    assert (tmp_path / name).read_text() == "mine\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_the_final_move_rechecks_files_written_meanwhile_by_another_run(tmp_path):
    target = tmp_path / "out"
    refused = pytest.raises(FileExistsError, match=r"model\.safetensors.*written meanwhile")
    with refused, staged_directory(target, overwrite=False) as first:
        (first / "model.safetensors").write_text("A")
        (first / "correction_config.json").write_text("A")
        with staged_directory(target, overwrite=False) as second:  # run B finishes while A is staging
            (second / "model.safetensors").write_text("B")
    assert (target / "model.safetensors").read_text() == "B"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # A's staging folder is gone, nothing of A moved
    assert sorted(p.name for p in target.iterdir()) == ["model.safetensors"]


def test_every_saved_file_is_readable_by_others_under_the_usual_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        corrector_for(mlp()).fit(data()).save_pretrained(tmp_path / "model")
    finally:
        os.umask(previous)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "model").iterdir()}
    assert modes == dict.fromkeys(modes, 0o644) and "model.safetensors" in modes


def test_an_output_dir_that_is_a_file_is_refused_before_writing(tmp_path):
    corrector = corrector_for(mlp()).fit(data())
    (tmp_path / "out").write_text("a file")
    with pytest.raises(FileExistsError, match="is a file, not a folder"):
        corrector.save_pretrained(tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_sigterm_while_staging_removes_the_staging_folder_and_exits_143(tmp_path):
    script = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        from hf_verifix.utils.staging import staged_directory
        with staged_directory(Path({str(tmp_path / "out")!r})) as staging:
            (staging / "model.safetensors").write_text("half")
            os.kill(os.getpid(), signal.SIGTERM)
            raise AssertionError("SIGTERM did not stop the block")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 128 + signal.SIGTERM, done.stderr
    assert list(tmp_path.iterdir()) == []


def test_staging_folders_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    stale = tmp_path / f".out.verifix-{pid}-0123abcd"
    (stale / "inner").mkdir(parents=True)
    (stale / "model.safetensors").write_text("left by a killed run")
    alive = tmp_path / f".out.verifix-{os.getppid()}-0123abcd"  # a running process's folder is left alone
    alive.mkdir()
    with staged_directory(tmp_path / "out") as staging:
        (staging / "a.txt").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, "out"])


@pytest.mark.parametrize("repo_id", ["me/..", "../../etc", "a/b/c", "", "me/model sap"])
def test_push_to_hub_rejects_a_bad_repo_id_before_writing_anything(repo_id):
    corrector = corrector_for(mlp()).fit(data())
    before = set(Path(tempfile.gettempdir()).glob("hf_verifix_push_*"))
    with pytest.raises(ConfigError, match=r"repo_id must be a Hub repo ID.*nothing was written"):
        push_to_hub(corrector, repo_id)
    assert set(Path(tempfile.gettempdir()).glob("hf_verifix_push_*")) == before


# ------------------------------------------------------------------------------------------ values


def test_trusted_labels_outside_the_models_classes_are_refused_before_any_change():
    for label in (7, -1):
        model = mlp()
        original = state(model)
        x, y = data().tensors
        y = y.clone()
        y[5] = label
        with pytest.raises(DataError, match=rf"trusted samples \[5\] are \[{label}\].*3 classes.*remap the labels"):
            corrector_for(model).fit(TensorDataset(x, y), trusted_indices=[1, 5, 9])
        assert_state_equal(model, original)


def test_a_tiny_alpha_on_a_rank_one_gram_gives_finite_exact_weights():
    model = nn.Linear(3, 2, bias=False)
    x = torch.tensor([[1.0, 2.0, 2.0]]).repeat(6, 1) * torch.arange(1, 7.0)[:, None]  # rank 1
    corrector = ProjectionCorrector(model, CorrectionConfig(progress=False)).fit(
        TensorDataset(x, torch.zeros(6, dtype=torch.long)), trusted_indices=range(6)
    )
    weight = model.weight.detach().clone().double()
    corrector.apply(1e-17)
    # σ̃ = (1, 0, 0): λ = (1, 0, 0) for every α > 0, so Ŵ = W·uuᵀ with u = x/‖x‖ (it was Inf/NaN everywhere).
    u = torch.tensor([1.0, 2.0, 2.0], dtype=torch.float64) / 3
    expected = weight @ torch.outer(u, u)
    assert bool(torch.isfinite(model.weight).all())
    torch.testing.assert_close(model.weight.double(), expected, rtol=0, atol=8 * EPS32 * float(weight.abs().max()))


def test_importance_scaling_is_finite_and_exact_at_the_edges():
    values = torch.tensor([0.0, 1e-300, 0.5, 1.0], dtype=torch.float64)
    for alpha in (1e-17, 1.0, 3e4, 1e300):
        lam = importance_scaling(values, alpha)
        assert bool(torch.isfinite(lam).all()) and lam[0] == 0 and lam[-1] == 1, (alpha, lam)
    assert importance_scaling(values, 1.0).tolist() == values.tolist()  # α = 1: λ = σ̃


def test_a_model_with_non_finite_weights_is_refused_before_reading_data():
    model = mlp()
    with torch.no_grad():
        model[0].weight[1, 2] = float("inf")
    original = state(model)
    with pytest.raises(NumericalError, match=r"hold NaN or Inf.*\['0'\].*exclude_modules"):
        corrector_for(model).fit(data(), trusted_indices=range(10))
    assert_state_equal(model, original)


def test_round_off_directions_are_not_kept_by_the_update():
    """A 1024-wide layer seen on 48 rows has rank ≤ 48; eigh's round-off must not count as directions."""
    generator = torch.Generator().manual_seed(0)
    rows = torch.randn(48, 1024, generator=generator, dtype=torch.float64)
    projection = LayerProjection(torch.randn(4, 1024, generator=generator), decompose((rows.T @ rows)[None]))
    assert projection.eigenvectors.shape[-1] == 48


# ------------------------------------------------------------------------------------------ the projection's math


def test_applied_weight_is_the_closed_form_of_the_papers_lambda():
    """Ŵ = W·αĜ(I + (α−1)Ĝ)⁻¹ with Ĝ = XᵀX / tr(XᵀX) of the trusted rows, at α where λ is far from 0 and 1."""
    model = nn.Linear(5, 3, bias=False)
    x = torch.randn(30, 5, generator=torch.Generator().manual_seed(1))
    x[:, 4] = x[:, 0] - x[:, 1]  # rank 4: one direction gets λ = 0 at every α
    trusted = list(range(0, 30, 2))
    corrector = ProjectionCorrector(model, CorrectionConfig(progress=False)).fit(
        TensorDataset(x, torch.zeros(30, dtype=torch.long)), trusted_indices=trusted
    )
    weight = model.weight.detach().double()
    rows = x[trusted].double()
    gram = rows.T @ rows
    g = gram / gram.trace()
    for alpha in (2.0, 30.0, 1e3):
        corrector.apply(alpha)
        expected = weight @ torch.linalg.solve(torch.eye(5, dtype=torch.float64) + (alpha - 1) * g, alpha * g)
        # Float64 agreement to α·(rows + d)·u (see the distributed test's bound), then the float32 rounding.
        atol = 2 * EPS32 * float(expected.abs().max()) + 4 * alpha * (len(trusted) + 5) * U64 * float(weight.norm())
        torch.testing.assert_close(model.weight.double(), expected, rtol=0, atol=atol)


def test_search_alpha_applies_the_alpha_with_the_best_accuracy():
    """A curve that is not flat: the weak second input direction of the trusted rows hurts on held-out data.

    λ₂ = ασ̃₂/((α−1)σ̃₂ + 1) grows with α, so small α removes the misleading weight and large α keeps it.
    """
    generator = torch.Generator().manual_seed(0)
    sign = torch.where(torch.arange(200) % 2 == 0, 1.0, -1.0)
    labels = (sign > 0).long()
    trusted_x = torch.stack([sign, 0.01 * torch.randn(200, generator=generator)], dim=1)
    held_out = torch.stack([sign, torch.randn(200, generator=generator)], dim=1)
    model = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[-1.0, -5.0], [1.0, 5.0]]))
    corrector = ProjectionCorrector(model, CorrectionConfig(progress=False)).fit(
        TensorDataset(trusted_x, labels), trusted_indices=range(200)
    )
    result = corrector.search_alpha(TensorDataset(held_out, labels), alphas=[1e6, 1e4, 1.0, 100.0])
    assert result.curve[1.0] > 0.95 > 0.8 > result.curve[1e6]  # not flat
    assert result.best_alpha == 1.0 and result.best_accuracy == max(result.curve.values())
    (projection,) = corrector.projections.values()
    assert torch.equal(model.weight, projection.weight(1.0))


def test_every_selector_module_registers_its_class_under_its_name():
    from hf_verifix.selection import (
        BMMSelector,
        ConfidentSelector,
        CoresetSelector,
        CurvatureSelector,
        ExpertSelector,
        LossSelector,
        RandomSelector,
    )

    expected = {
        "loss": LossSelector,
        "curvature": CurvatureSelector,
        "bmm": BMMSelector,
        "coreset": CoresetSelector,
        "expert": ExpertSelector,
        "confident": ConfidentSelector,
        "random": RandomSelector,
    }
    for name, cls in expected.items():
        assert selection_base._REGISTRY[name] is cls, name


# ------------------------------------------------------------------------------------------ BatchNorm recalibration


def bn_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.Dropout(0.5), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3))


def test_batchnorm_is_recalibrated_from_scratch_on_the_trusted_samples_with_dropout_off():
    model = bn_net()
    train = data(40)
    with torch.no_grad():  # trained statistics far from the truth: a recalibration that keeps them shows it
        model[2].running_mean.fill_(-100.0)
        model[2].running_var.fill_(50.0)
        model[2].num_batches_tracked.fill_(500)
    trusted = [0, 3, 4, 10, 11, 17, 25, 26, 31, 38]
    corrector = ProjectionCorrector(model, CorrectionConfig(progress=False, recalibrate_batchnorm=True, batch_size=4))
    corrector.fit(train, trusted_indices=trusted)
    corrector.apply(1e3)
    # Expected: BatchNorm's cumulative average (momentum=None) of per-batch statistics of the corrected first layer's
    # outputs on the trusted samples only, in batches of 4, with dropout off (eval) — computed here by hand.
    inputs = train.tensors[0][trusted]
    with torch.no_grad():
        features = model[0](inputs)
    batches = features.split(4)
    mean = torch.stack([b.mean(0) for b in batches]).mean(0)
    var = torch.stack([b.var(0, unbiased=True) for b in batches]).mean(0)
    torch.testing.assert_close(model[2].running_mean, mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model[2].running_var, var, rtol=1e-5, atol=1e-6)
    assert int(model[2].num_batches_tracked) == len(batches)
    assert model[1].training and model[2].momentum == 0.1
