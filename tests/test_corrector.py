"""ProjectionCorrector's behaviour: selection, apply/revert, α search, evaluate, BatchNorm recalibration, saving."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from testing_utils import cloned_state as _state
from testing_utils import fitted_blob_corrector as _fitted
from torch import nn
from torch.utils.data import TensorDataset

from hf_verifix import CorrectionConfig, ProjectionCorrector
from hf_verifix.projection.batchnorm import recalibrate_batchnorm


def conv_bn_net(classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, stride=2),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, classes),
    )


def dataset(n: int = 60, classes: int = 3, seed: int = 0) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    return TensorDataset(
        torch.randn(n, 1, 8, 8, generator=generator), torch.randint(0, classes, (n,), generator=generator)
    )


def test_loss_selector_picks_lowest_cross_entropy():
    model = conv_bn_net().eval()
    data = dataset()
    with torch.no_grad():
        losses = F.cross_entropy(model(data.tensors[0]), data.tensors[1], reduction="none")
    corrector = ProjectionCorrector(model, n_trusted=10, progress=False).fit(data)
    expected = torch.sort(torch.argsort(losses)[:10]).values
    assert corrector.trusted_indices.tolist() == expected.tolist()
    torch.testing.assert_close(corrector.selection.scores.float(), losses, rtol=1e-5, atol=1e-6)


def test_per_class_selection_balances_and_takes_lowest_within_class():
    model = conv_bn_net().eval()
    data = dataset(90)
    labels = data.tensors[1]
    with torch.no_grad():
        losses = F.cross_entropy(model(data.tensors[0]), labels, reduction="none")
    corrector = ProjectionCorrector(model, n_trusted=10, per_class=True, progress=False).fit(data)
    picked = corrector.trusted_indices
    assert torch.bincount(labels[picked], minlength=3).tolist() == [4, 3, 3]
    for c, quota in enumerate([4, 3, 3]):
        members = torch.nonzero(labels == c).flatten()
        best = members[torch.argsort(losses[members])[:quota]]
        assert sorted(best.tolist()) == sorted(picked[labels[picked] == c].tolist())


def test_trusted_indices_bypass_selection_and_accept_a_mask():
    data = dataset()
    mask = torch.zeros(60, dtype=torch.bool)
    mask[[3, 7, 11]] = True
    by_mask = ProjectionCorrector(conv_bn_net(), progress=False).fit(data, trusted_indices=mask)
    by_index = ProjectionCorrector(conv_bn_net(), progress=False).fit(data, trusted_indices=[11, 3, 7])
    assert by_mask.trusted_indices.tolist() == [3, 7, 11] == by_index.trusted_indices.tolist()
    assert by_mask.selection is None
    for name in by_mask.projections:
        torch.testing.assert_close(by_mask.projections[name].weight(3e4), by_index.projections[name].weight(3e4))


def test_revert_is_bit_exact_and_apply_does_not_compound():
    model = conv_bn_net()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    corrector = ProjectionCorrector(model, n_trusted=20, recalibrate_batchnorm=True, progress=False).fit(dataset())
    corrector.apply(1e3)
    once = {k: v.clone() for k, v in model.state_dict().items()}
    assert not torch.equal(once["0.weight"], state["0.weight"])
    assert not torch.equal(once["1.running_mean"], state["1.running_mean"])
    corrector.apply(1e5)
    corrector.apply(1e3)
    for key, value in model.state_dict().items():
        assert torch.equal(value, once[key]), key  # α=1e3 again gives the same model: nothing compounds
    corrector.revert()
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert all(torch.equal(model.state_dict()[k], state[k]) for k in state)
    assert model.training  # the mode the model came in with


def test_biases_unchanged_by_projection():
    model = conv_bn_net()
    biases = {n: p.clone() for n, p in model.named_parameters() if n.endswith("bias")}
    ProjectionCorrector(model, n_trusted=20, progress=False).fit(dataset()).apply(10.0)
    for name, value in model.named_parameters():
        if name.endswith("bias"):
            assert torch.equal(value, biases[name])


def test_batchnorm_recalibration_is_the_exact_average_over_trusted_samples():
    model = conv_bn_net()
    x = dataset().tensors[0][:20]
    captured = []
    handle = model[1].register_forward_pre_hook(lambda m, a: captured.append(a[0].detach()))
    recalibrate_batchnorm(model, [x[:7], x[7:]])
    handle.remove()
    # Cumulative averaging over batches (momentum=None) of per-batch means.
    means = torch.stack([c.mean(dim=(0, 2, 3)) for c in captured])
    torch.testing.assert_close(model[1].running_mean, means.mean(0), rtol=1e-5, atol=1e-6)
    assert model[1].momentum == 0.1 and model.training


def test_exclude_and_target_modules():
    model = conv_bn_net()
    excluded = ProjectionCorrector(model, exclude_modules=["8"], progress=False)
    with pytest.warns(UserWarning, match="'8': excluded by exclude_modules"):
        excluded.fit(dataset(), trusted_indices=range(10))
    assert set(excluded.projections) == {"0", "3"}
    only_convs = ProjectionCorrector(conv_bn_net(), target_modules=[r"\d"], exclude_modules=None, progress=False)
    only_convs.fit(dataset(), trusted_indices=range(10))
    assert set(only_convs.projections) == {"0", "3", "8"}
    stem = ProjectionCorrector(conv_bn_net(), target_modules=["0"], progress=False).fit(dataset(), trusted_indices=[1])
    assert set(stem.projections) == {"0"}


def test_search_alpha_picks_the_best_and_applies_it():
    model = conv_bn_net()
    train, held_out = dataset(60, seed=0), dataset(40, seed=1)
    corrector = ProjectionCorrector(model, n_trusted=30, progress=False).fit(train)
    alphas = [1.0, 10.0, 1e3, 1e6]
    result = corrector.search_alpha(held_out, alphas=alphas)
    assert sorted(result.curve) == alphas
    baseline_model = conv_bn_net()
    with torch.no_grad():
        base_acc = (baseline_model.eval()(held_out.tensors[0]).argmax(1) == held_out.tensors[1]).float().mean().item()
    assert result.baseline_accuracy == pytest.approx(base_acc)
    for alpha, accuracy in result.curve.items():
        corrector.apply(alpha)
        with torch.no_grad():
            acc = (model.eval()(held_out.tensors[0]).argmax(1) == held_out.tensors[1]).float().mean().item()
        assert accuracy == pytest.approx(acc)
    best = max(result.curve.values())
    if best > result.baseline_accuracy:
        assert result.curve[result.best_alpha] == best
    else:
        assert result.best_alpha is None


def test_search_alpha_keeps_original_when_nothing_beats_it():
    model = conv_bn_net().eval()
    train = dataset()
    with torch.no_grad():
        perfect = TensorDataset(train.tensors[0], model(train.tensors[0]).argmax(1))  # baseline accuracy is 1.0
    state = {k: v.clone() for k, v in model.state_dict().items()}
    corrector = ProjectionCorrector(model, n_trusted=20, progress=False).fit(train)
    result = corrector.search_alpha(perfect, alphas=[0.5, 2.0])
    assert result.baseline_accuracy == 1.0 and result.best_alpha is None and result.improvement == 0.0
    assert all(torch.equal(model.state_dict()[k], state[k]) for k in state)
    assert corrector.applied_alpha is None


def test_evaluate_restores_weights_and_applied_alpha_exactly(tmp_path: Path) -> None:
    corrector, eval_data, _ = _fitted()
    corrector.apply(1e3)  # an α other than the search's best, to be restored as found
    before, timings = _state(corrector), dict(corrector.timings)
    evaluation = corrector.evaluate(eval_data, alpha=10.0)
    after = _state(corrector)
    assert evaluation.alpha == 10.0
    assert corrector.applied_alpha == 1e3
    assert corrector.timings == timings
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_model_card_takes_before_and_after_from_the_search_while_the_model_is_as_it_left_it():
    from hf_verifix.reporting.model_card import CardInfo, render_model_card

    def scores(corrector: ProjectionCorrector, info: CardInfo | None = None) -> list[float] | None:
        results = render_model_card(corrector.report(), info or CardInfo("m")).data.eval_results
        return None if results is None else [r.metric_value for r in results]

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))  # 5 trusted samples span 5 of 64 input directions
    train, inputs = dataset(60, seed=0), dataset(40, seed=1).tensors[0]
    corrector = ProjectionCorrector(model, n_trusted=5, progress=False).fit(train)
    corrector.apply(1.0)
    with torch.no_grad():
        target = model.eval()(inputs).argmax(1)  # labels that the α = 1 model gets all right
    corrector.revert()
    result = corrector.search_alpha(TensorDataset(inputs, target), alphas=[1.0, 1e6])
    assert result.best_alpha == 1.0 and result.best_accuracy == 1.0 > result.baseline_accuracy
    assert scores(corrector) == [result.baseline_accuracy, 1.0]
    assert scores(corrector, CardInfo("m", accuracy_before=0.1, accuracy_after=0.2)) == [0.1, 0.2]  # given wins
    corrector.apply(1e6)  # no longer the model the search measured: nothing is guessed
    assert scores(corrector) is None
    corrector.revert()
    with torch.no_grad():
        perfect = TensorDataset(inputs, model.eval()(inputs).argmax(1))
    assert corrector.search_alpha(perfect, alphas=[1e6]).best_alpha is None  # kept uncorrected
    assert scores(corrector) == [1.0, 1.0]


def test_save_pretrained_writes_model_config_and_report(tmp_path):
    from safetensors.torch import load_file

    model = conv_bn_net()
    config = CorrectionConfig(n_trusted=12, alpha=1e4, progress=False)
    corrector = ProjectionCorrector(model, config).fit(dataset())
    corrector.apply()
    out = corrector.save_pretrained(tmp_path / "out")
    saved = load_file(out / "model.safetensors")
    for key, value in model.state_dict().items():
        assert torch.equal(saved[key], value), key
    assert CorrectionConfig.load(out) == config
    report = json.loads((out / "correction_report.json").read_text())
    assert report["applied_alpha"] == 1e4
    assert report["trusted"]["count"] == 12 and sum(report["trusted"]["class_counts"]) == 12
    assert set(report["layers"]) == {"0", "3", "8"}
    assert not [p for p in out.iterdir() if p.name.startswith(".verifix-")]  # staging folder removed


def test_float64_and_bfloat16_models_keep_their_dtype_with_float64_statistics():
    model = conv_bn_net().to(torch.float64)
    data = TensorDataset(dataset().tensors[0].double(), dataset().tensors[1])
    corrector = ProjectionCorrector(model, n_trusted=10, progress=False).fit(data)
    corrector.apply(3e4)
    assert model[0].weight.dtype == torch.float64
    half = nn.Linear(4, 3).to(torch.bfloat16)
    c = ProjectionCorrector(half, progress=False, solver="eigh")
    c.fit(
        TensorDataset(torch.randn(9, 4, dtype=torch.bfloat16), torch.zeros(9, dtype=torch.long)),
        trusted_indices=range(9),
    )
    assert list(c.projections) == [""]  # a bare layer is the model's root module
    assert c.projections[""].eigenvectors.dtype == torch.float64
    c.apply(3e4)
    assert half.weight.dtype == torch.bfloat16


def test_selector_by_name_with_kwargs_and_by_object():
    from hf_verifix.data.source import SampleSource
    from hf_verifix.selection import CurvatureSelector, ExpertSelector

    data = dataset()
    by_kwargs = ProjectionCorrector(
        conv_bn_net(), n_trusted=3, selector="expert", selector_kwargs={"indices": [5, 9, 2]}, progress=False
    ).fit(data)
    assert by_kwargs.trusted_indices.tolist() == [2, 5, 9]
    assert by_kwargs.report()["trusted"]["selector"] == "expert"
    by_object = ProjectionCorrector(conv_bn_net(), n_trusted=3, progress=False)
    by_object.fit(data, selector=ExpertSelector([9, 2, 5]))
    assert by_object.trusted_indices.tolist() == [2, 5, 9]
    assert by_object.report()["trusted"]["selector"] == "ExpertSelector"
    model = conv_bn_net()
    curv = ProjectionCorrector(model, n_trusted=6, selector="curvature", selector_kwargs={"n": 2}, progress=False)
    expected = CurvatureSelector(n=2).select(conv_bn_net(), SampleSource(data), 6).indices
    assert curv.fit(data).trusted_indices.tolist() == expected.tolist()


def test_report_gives_trusted_set_precision_and_coverage_with_clean_labels():
    data = dataset(30)
    clean = data.tensors[1].clone()
    clean[[0, 1]] = (clean[[0, 1]] + 1) % 3  # samples 0 and 1 carry wrong labels
    corrector = ProjectionCorrector(conv_bn_net(), progress=False).fit(data, trusted_indices=[0, 1, 2, 3])
    trusted = corrector.report(clean_labels=clean)["trusted"]
    assert trusted["precision"] == 0.5
    assert trusted["clean_class_counts"] == torch.bincount(clean[:4], minlength=3).tolist()
    assert trusted["class_coverage"] == (torch.bincount(clean[:4], minlength=3) > 0).float().mean().item()
    with pytest.raises(ValueError, match="one label per fitted sample"):
        corrector.report(clean_labels=clean[:5])


# ------------------------------------------------------------------------------------- reloading a correction
def test_a_saved_correction_reproduces_bit_identically_on_the_original_model(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = conv_bn_net()
    original = conv_bn_net()
    original.load_state_dict(model.state_dict())
    corrector = ProjectionCorrector(model, n_trusted=20, progress=False, recalibrate_batchnorm=True).fit(dataset())
    if corrector.search_alpha(dataset(seed=1), alphas=[3.0, 30.0, 3e3]).best_alpha is None:
        corrector.apply(30.0)  # no α won on this draw: apply one, so there is a correction to reproduce
    applied = corrector.applied_alpha
    corrector.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "correction_config.json").read_text())
    report = json.loads((tmp_path / "correction_report.json").read_text())
    assert saved["alpha"] == report["applied_alpha"] == applied  # what was applied, not config.alpha
    assert report["trusted"]["indices"] == corrector.trusted_indices.tolist()
    assert report["versions"]["hf_verifix"] and torch.__version__.startswith(report["versions"]["torch"])
    again = ProjectionCorrector.from_pretrained(original, tmp_path, dataset())
    assert again.applied_alpha == applied and torch.equal(again.trusted_indices, corrector.trusted_indices)
    for key, value in model.state_dict().items():  # weights and recalibrated BatchNorm statistics
        assert torch.equal(original.state_dict()[key], value), key


def test_from_pretrained_refuses_a_folder_without_a_correction_or_another_model(tmp_path: Path) -> None:
    from hf_verifix.errors import LoadError

    with pytest.raises(LoadError, match=r"holds no reloadable correction .*save_pretrained"):
        ProjectionCorrector.from_pretrained(conv_bn_net(), tmp_path, dataset())
    corrector = ProjectionCorrector(conv_bn_net(), n_trusted=20, progress=False).fit(dataset())
    corrector.apply(30.0)
    corrector.save_pretrained(tmp_path / "saved")
    report = json.loads((tmp_path / "saved" / "correction_report.json").read_text())
    del report["trusted"]["indices"]  # as written before the indices were recorded
    (tmp_path / "saved" / "correction_report.json").write_text(json.dumps(report))
    with pytest.raises(LoadError, match=r"KeyError: 'indices'.*trusted indices"):
        ProjectionCorrector.from_pretrained(conv_bn_net(), tmp_path / "saved", dataset())
    corrector.save_pretrained(tmp_path / "again")
    other = nn.Sequential(nn.Flatten(), nn.Linear(8 * 8, 3))
    with pytest.raises(LoadError, match=r"pass the model the correction was made on"):
        ProjectionCorrector.from_pretrained(other, tmp_path / "again", dataset())
