"""CorrectionConfig: validation of every field, dict/JSON round trips, unknown keys, unreadable files."""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hf_verifix import CorrectionConfig
from hf_verifix.config import CONFIG_NAME
from hf_verifix.errors import ConfigError

FIELDS = [f.name for f in dataclasses.fields(CorrectionConfig)]

NON_DEFAULT: dict[str, Any] = {
    "alpha": 1e5,
    "alpha_grid": (10.0, 1e4, 2.5e6),
    "n_trusted": 250,
    "selector": "loss",
    "selector_kwargs": {"n": 5, "h": 0.01},
    "per_class": True,
    "target_modules": ["layer4\\..*", "fc"],
    "exclude_modules": ["fc"],
    "recalibrate_batchnorm": True,
    "on_uncorrectable": "skip",
    "batch_size": 7,
    "image_column": "img",
    "label_column": "fine_label",
    "seed": 2**63,
    "progress": False,
    "statistics_device": "cpu",
    "solver": "eigh",
    "gram_precision": "float32",
    "max_rows_per_layer": 50_000,
}


def test_non_default_example_covers_every_field() -> None:
    assert sorted(NON_DEFAULT) == sorted(FIELDS)
    defaults = CorrectionConfig()
    assert all(getattr(defaults, k) != v for k, v in NON_DEFAULT.items() if k != "selector")


# ---------------------------------------------------------------------------------------------
# round trips
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("values", [pytest.param({}, id="defaults"), pytest.param(NON_DEFAULT, id="non-default")])
def test_dict_round_trip(values: dict[str, Any]) -> None:
    config = CorrectionConfig(**values)
    data = config.to_dict()
    assert sorted(data) == sorted(FIELDS)
    assert isinstance(data["alpha_grid"], list)
    assert json.loads(json.dumps(data)) == data
    assert CorrectionConfig.from_dict(data) == config
    assert CorrectionConfig.from_dict(json.loads(json.dumps(data))) == config


def test_to_dict_is_a_copy() -> None:
    config = CorrectionConfig(**NON_DEFAULT)
    data = config.to_dict()
    data["target_modules"].append("x")
    assert config.target_modules == ["layer4\\..*", "fc"]


@pytest.mark.parametrize("as_directory", [True, False], ids=["directory", "file"])
def test_save_load_round_trip(tmp_path: Path, as_directory: bool) -> None:
    config = CorrectionConfig(**NON_DEFAULT)
    target = tmp_path / "run" if as_directory else tmp_path / "my_config.json"
    if as_directory:
        target.mkdir()
    written = config.save(target)
    assert written == (target / CONFIG_NAME if as_directory else target)
    assert not list(written.parent.glob("*.tmp"))
    assert json.loads(written.read_text(encoding="utf-8")) == config.to_dict()
    assert CorrectionConfig.load(target) == config
    assert CorrectionConfig.load(written) == config


def test_save_overwrites(tmp_path: Path) -> None:
    CorrectionConfig(alpha=1.0).save(tmp_path)
    CorrectionConfig(alpha=2.0).save(tmp_path)
    assert CorrectionConfig.load(tmp_path).alpha == 2.0


@pytest.mark.parametrize(
    ("field", "given", "stored"),
    [
        pytest.param("alpha", 5, 5.0, id="alpha-int-to-float"),
        pytest.param("alpha", np.float64(2.5), 2.5, id="alpha-numpy-float"),
        pytest.param("alpha", np.int32(7), 7.0, id="alpha-numpy-int"),
        pytest.param("alpha", Fraction(1, 2), 0.5, id="alpha-fraction"),
        pytest.param("alpha_grid", [1, 2.5], (1.0, 2.5), id="alpha-grid-list"),
        pytest.param("alpha_grid", np.array([3.0, 4.0]), (3.0, 4.0), id="alpha-grid-numpy"),
        pytest.param("alpha_grid", range(1, 3), (1.0, 2.0), id="alpha-grid-range"),
        pytest.param("n_trusted", np.int64(12), 12, id="n-trusted-numpy-int"),
        pytest.param("seed", 2**64 - 1, 2**64 - 1, id="seed-max"),
        pytest.param("target_modules", "fc", ["fc"], id="target-modules-str"),
        pytest.param("exclude_modules", ("a", "b"), ["a", "b"], id="exclude-modules-tuple"),
        pytest.param("exclude_modules", [], [], id="exclude-modules-empty"),
    ],
)
def test_accepted_values_are_normalised(field: str, given: Any, stored: Any) -> None:
    config = CorrectionConfig(**{field: given})
    value = getattr(config, field)
    assert value == stored and type(value) is type(stored)
    assert CorrectionConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


# ---------------------------------------------------------------------------------------------
# unknown keys
# ---------------------------------------------------------------------------------------------


def test_unknown_keys_warn_and_are_ignored() -> None:
    data = {**CorrectionConfig(alpha=7.0).to_dict(), "n_trustd": 5, "learning_rate": 0.1}
    with pytest.warns(
        UserWarning, match=r"ignoring unknown CorrectionConfig keys \['learning_rate', 'n_trustd'\]"
    ) as r:
        config = CorrectionConfig.from_dict(data)
    assert config == CorrectionConfig(alpha=7.0)
    assert len(r) == 1 and r[0].filename == __file__, "the warning must point at the caller's line"
    assert "known keys are" in str(r[0].message) and "'n_trusted'" in str(r[0].message)


def test_unknown_keys_of_mixed_types_warn_too() -> None:
    with pytest.warns(UserWarning, match=r"ignoring unknown CorrectionConfig keys \[.*1.*None.*'x'|unknown.*keys"):
        config = CorrectionConfig.from_dict({1: 2, None: 3, "x": 4, (1, 2): 5})
    assert config == CorrectionConfig()


def test_unknown_keys_in_a_file_warn_at_the_callers_line(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"alpha": 9.0, "momentum": 0.9}), encoding="utf-8")
    with pytest.warns(UserWarning, match=r"ignoring unknown CorrectionConfig keys \['momentum'\]") as record:
        config = CorrectionConfig.load(path)
    assert config == CorrectionConfig(alpha=9.0)
    assert record[0].filename == __file__


def test_known_keys_do_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        CorrectionConfig.from_dict(CorrectionConfig().to_dict())


# ---------------------------------------------------------------------------------------------
# files that cannot be read
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "match"),
    [
        pytest.param(b"{not json", r"is not a valid UTF-8 JSON file \(Expecting property name", id="invalid-json"),
        pytest.param(b"", r"is not a valid UTF-8 JSON file \(Expecting value", id="empty-file"),
        pytest.param(b'{"alpha": 1e4,}', r"is not a valid UTF-8 JSON file", id="trailing-comma"),
        pytest.param(b"\xff\xfe{}", r"is not a valid UTF-8 JSON file \(.*codec can't decode", id="not-utf8"),
        pytest.param(b"[1, 2]", r"invalid correction config .*must be a dict \(a JSON object\).*got list", id="list"),
        pytest.param(b"null", r"invalid correction config .*got NoneType", id="null"),
        pytest.param(
            b'{"alpha": -1}', r"invalid correction config .*alpha must be a finite number > 0", id="bad-alpha"
        ),
        pytest.param(b'{"alpha": NaN}', r"invalid correction config .*alpha must be .*got nan", id="nan-alpha"),
        pytest.param(b'{"n_trusted": 1.5}', r"invalid correction config .*n_trusted must be an integer", id="float-n"),
    ],
)
def test_unreadable_file_raises_config_error_naming_the_path(tmp_path: Path, content: bytes, match: str) -> None:
    path = tmp_path / "broken.json"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=match) as info:
        CorrectionConfig.load(path)
    assert repr(str(path)) in str(info.value)
    assert "was it written by CorrectionConfig.save" in str(info.value) or "invalid correction config" in str(
        info.value
    )


def test_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no correction config at .*correction_config\.json.*\.save"):
        CorrectionConfig.load(tmp_path)


# ---------------------------------------------------------------------------------------------
# every field validated
# ---------------------------------------------------------------------------------------------

FINITE = r"must be a finite number > 0 \(e\.g\. 3e4\), got "
POSITIVE_INT = r"must be an integer >= 1 \(e\.g\. \d+\), got "
BOOL = r"must be True or False, got "

BAD_VALUES = [
    ("alpha", 0, "alpha " + FINITE + r"0 \(int\)"),
    ("alpha", -2.0, "alpha " + FINITE + r"-2\.0 \(float\)"),
    ("alpha", math.nan, "alpha " + FINITE + r"nan"),
    ("alpha", math.inf, "alpha " + FINITE + r"inf"),
    ("alpha", -math.inf, "alpha " + FINITE + r"-inf"),
    ("alpha", 10**400, "alpha " + FINITE + r"1000.*\(int\)"),
    ("alpha", True, "alpha " + FINITE + r"True \(bool\)"),
    ("alpha", "3e4", "alpha " + FINITE + r"'3e4' \(str\)"),
    ("alpha", None, "alpha " + FINITE + r"None \(NoneType\)"),
    ("alpha", [3e4], "alpha " + FINITE + r"\[30000\.0\] \(list\)"),
    ("alpha", 1j, "alpha " + FINITE + r"1j \(complex\)"),
    ("alpha_grid", (), r"alpha_grid must hold at least one alpha, got an empty sequence; pass e\.g\."),
    ("alpha_grid", "1e3", r"alpha_grid must be a list or tuple of finite numbers > 0.*got '1e3' \(str\)"),
    ("alpha_grid", 3e4, r"alpha_grid must be a list or tuple.*got 30000\.0 \(float\)"),
    ("alpha_grid", None, r"alpha_grid must be a list or tuple.*got None"),
    ("alpha_grid", {1e3: "a"}, r"alpha_grid must be a list or tuple.*\(dict\)"),
    ("alpha_grid", {1e3}, r"alpha_grid must be a list or tuple.*\(set\)"),
    ("alpha_grid", (1e3, 0.0), "every alpha_grid entry " + FINITE + r"0\.0"),
    ("alpha_grid", [1e3, math.nan], "every alpha_grid entry " + FINITE + r"nan"),
    ("alpha_grid", [1e3, "1e4"], "every alpha_grid entry " + FINITE + r"'1e4' \(str\)"),
    ("alpha_grid", [False], "every alpha_grid entry " + FINITE + r"False \(bool\)"),
    ("n_trusted", 0, "n_trusted " + POSITIVE_INT + r"0$"),
    ("n_trusted", -5, "n_trusted " + POSITIVE_INT + r"-5$"),
    ("n_trusted", 10.0, "n_trusted " + POSITIVE_INT + r"10\.0 \(float\)"),
    ("n_trusted", True, "n_trusted " + POSITIVE_INT + r"True \(bool\)"),
    ("n_trusted", "1000", "n_trusted " + POSITIVE_INT + r"'1000' \(str\)"),
    ("n_trusted", None, "n_trusted " + POSITIVE_INT + r"None"),
    ("batch_size", 0, "batch_size " + POSITIVE_INT + r"0$"),
    ("batch_size", 2.5, "batch_size " + POSITIVE_INT + r"2\.5 \(float\)"),
    ("batch_size", False, "batch_size " + POSITIVE_INT + r"False \(bool\)"),
    ("seed", -1, r"seed must be an integer in \[0, 2\*\*64 - 1\] \(e\.g\. 0\), got -1$"),
    ("seed", 2**64, r"seed must be an integer in \[0, 2\*\*64 - 1\].*got 18446744073709551616$"),
    ("seed", 1.0, r"seed must be an integer .*got 1\.0 \(float\)"),
    ("seed", True, r"seed must be an integer .*got True \(bool\)"),
    ("seed", "0", r"seed must be an integer .*got '0' \(str\)"),
    ("selector", "", r"selector must be the non-empty name of a registered selector \(e\.g\. 'loss'.*got '' \(str\)"),
    ("selector", 1, r"selector must be .*list_selectors\(\)\), got 1 \(int\)"),
    ("selector", None, r"selector must be .*got None"),
    ("selector_kwargs", [1], r"selector_kwargs must be a dict of keyword arguments with str keys.*got \[1\]"),
    ("selector_kwargs", {1: 2}, r"selector_kwargs must be a dict of keyword arguments with str keys"),
    ("selector_kwargs", {"f": float("nan")}, r"selector_kwargs must be JSON-serialisable.*fit\(selector=\.\.\.\)"),
    ("selector_kwargs", {"obj": object()}, r"selector_kwargs must be JSON-serialisable"),
    ("per_class", "yes", "per_class " + BOOL + r"'yes' \(str\); pass a bool"),
    ("per_class", 1, "per_class " + BOOL + r"1 \(int\)"),
    ("per_class", None, "per_class " + BOOL + r"None"),
    ("recalibrate_batchnorm", "False", "recalibrate_batchnorm " + BOOL + r"'False' \(str\)"),
    ("recalibrate_batchnorm", 0, "recalibrate_batchnorm " + BOOL + r"0 \(int\)"),
    ("progress", "no", "progress " + BOOL + r"'no' \(str\)"),
    ("progress", None, "progress " + BOOL + r"None"),
    ("target_modules", [], r"target_modules=\[\] matches no layer.*pass None to target every"),
    ("target_modules", ["fc", 3], r"target_modules must be a list of regular expressions.*got \['fc', 3\] \(list\)"),
    ("target_modules", 3, r"target_modules must be a list of regular expressions.*or None, got 3 \(int\)"),
    ("target_modules", {"fc"}, r"target_modules must be a list.*\(set\)"),
    ("target_modules", ["layer[1"], r"target_modules entry 'layer\[1' is not a valid regular expression.*re\.escape"),
    ("exclude_modules", ["("], r"exclude_modules entry '\(' is not a valid regular expression \(missing \)"),
    ("exclude_modules", [None], r"exclude_modules must be a list of regular expressions.*got \[None\]"),
    ("exclude_modules", b"fc", r"exclude_modules must be a list.*got b'fc' \(bytes\)"),
    ("on_uncorrectable", "warn", r"on_uncorrectable must be 'error' \(refuse .*\) or 'skip' .*got 'warn' \(str\)"),
    ("on_uncorrectable", None, r"on_uncorrectable must be 'error'.*got None \(NoneType\)"),
    ("on_uncorrectable", "Error", r"on_uncorrectable must be 'error'.*got 'Error' \(str\)"),
    ("statistics_device", "gpu0", r"statistics_device must be None \(the model's device\) or a torch device .*'gpu0'"),
    ("statistics_device", 0, r"statistics_device must be None .*got 0 \(int\)"),
    ("solver", "svd", r"solver must be one of 'auto', 'cholesky', 'eigh', got 'svd' \(str\); pass solver='auto'"),
    ("gram_precision", "float16", r"gram_precision must be one of 'float64', 'float32', got 'float16' \(str\)"),
    ("max_rows_per_layer", 0, r"max_rows_per_layer must be .*got 0"),
    ("image_column", "", r"image_column must be a column name of the dataset \(a non-empty str\) or None.*got ''"),
    ("image_column", 0, r"image_column must be a column name.*got 0 \(int\)"),
    ("label_column", ["label"], r"label_column must be a column name.*got \['label'\] \(list\)"),
]


def _case_id(field: str, value: Any) -> str:
    text = repr(value) if len(repr(value)) < 20 else type(value).__name__
    return f"{field}={text}"


@pytest.mark.parametrize(
    ("field", "value", "match"), [pytest.param(f, v, m, id=_case_id(f, v)) for f, v, m in BAD_VALUES]
)
def test_invalid_field_raises_config_error(field: str, value: Any, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        CorrectionConfig(**{field: value})
    assert type(info.value) is ConfigError
    with pytest.raises(ConfigError, match=match):
        CorrectionConfig.from_dict({field: value})


def test_every_field_has_a_rejected_value() -> None:
    assert sorted({field for field, _, _ in BAD_VALUES}) == sorted(FIELDS)


def test_long_values_are_shortened_in_messages() -> None:
    with pytest.raises(ConfigError) as info:
        CorrectionConfig(alpha="x" * 1000)
    assert len(str(info.value)) < 200 and "...' (str)" not in str(info.value) and "... (str)" in str(info.value)


@pytest.mark.parametrize("data", [None, [], "alpha=1", 3], ids=["None", "list", "str", "int"])
def test_from_dict_needs_a_dict(data: Any) -> None:
    with pytest.raises(
        ConfigError, match=rf"must be a dict \(a JSON object\) of field values, got {type(data).__name__}"
    ):
        CorrectionConfig.from_dict(data)


# ---------------------------------------------------------------------------------------------
# property: from_dict returns a round-tripping config or raises ConfigError, nothing else
# ---------------------------------------------------------------------------------------------

_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.floats(min_value=1e-3, max_value=1e9)
    | st.text(max_size=8)
    | st.sampled_from(["loss", "fc", ".*", "(", "[a-", "layer\\d+", "image", "label"])
    | st.binary(max_size=4)
    | st.complex_numbers(max_magnitude=10)
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=3), inner, max_size=3)
        | st.sets(st.integers(), max_size=3)
    ),
    max_leaves=6,
)
_keys = st.sampled_from(FIELDS) | st.text(max_size=6) | st.integers() | st.none()


def _valid_field_values() -> st.SearchStrategy[dict[str, Any]]:
    """Mostly valid values, so that a good share of examples get through validation."""
    return st.fixed_dictionaries(
        {},
        optional={
            "alpha": st.floats(min_value=1e-6, max_value=1e12) | st.integers(min_value=1, max_value=10**6),
            "alpha_grid": st.lists(st.floats(min_value=1e-3, max_value=1e9), min_size=1, max_size=5),
            "n_trusted": st.integers(min_value=1, max_value=10**6),
            "batch_size": st.integers(min_value=1, max_value=4096),
            "seed": st.integers(min_value=0, max_value=2**64 - 1),
            "selector": st.text(min_size=1, max_size=8),
            "per_class": st.booleans(),
            "recalibrate_batchnorm": st.booleans(),
            "progress": st.booleans(),
            "on_uncorrectable": st.sampled_from(["error", "skip", "warn"]),
            "statistics_device": st.none() | st.sampled_from(["cpu", "cuda:1", "tpu", ""]),
            "solver": st.sampled_from(["auto", "cholesky", "eigh", "svd"]),
            "gram_precision": st.sampled_from(["float64", "float32", "bfloat16"]),
            "max_rows_per_layer": st.none() | st.integers(min_value=-2, max_value=10**6),
            "target_modules": st.none() | st.lists(st.sampled_from(["fc", ".*", "layer\\d+\\..*"]), min_size=1),
            "exclude_modules": st.none() | st.lists(st.sampled_from(["fc", "head", "conv\\d"])),
            "image_column": st.none() | st.text(min_size=1, max_size=6),
            "label_column": st.none() | st.text(min_size=1, max_size=6),
        },
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.one_of(
        st.dictionaries(_keys, _values, max_size=6),
        _valid_field_values(),
        st.builds(
            lambda good, bad: {**good, **bad}, _valid_field_values(), st.dictionaries(_keys, _values, max_size=2)
        ),
    )
)
def test_from_dict_round_trips_or_raises_config_error(data: dict[Any, Any]) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            config = CorrectionConfig.from_dict(data)
        except ConfigError as err:
            assert str(err), "a ConfigError must say what is wrong"
            return
    for warning in caught:
        assert issubclass(warning.category, UserWarning)
        assert "ignoring unknown CorrectionConfig keys" in str(warning.message)
    assert bool(caught) == any(k not in FIELDS for k in data)
    as_dict = config.to_dict()
    assert CorrectionConfig.from_dict(as_dict) == config
    assert CorrectionConfig.from_dict(json.loads(json.dumps(as_dict))) == config
    assert all(math.isfinite(a) and a > 0 for a in (config.alpha, *config.alpha_grid))
