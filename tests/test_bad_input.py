"""Bad input fails at our API with a clear error naming the argument, never deep inside NumPy."""

import numpy as np
import pytest

from refimpl import (SUBLAYERS, l2pool_backward, l2pool_forward, lcn_forward,
                     local_decoder_forward, local_filter_backward, local_filter_forward,
                     objective_forward)
from refimpl.geometry import make_grid

rng = np.random.default_rng(0)
X = rng.standard_normal((2, 3, 10, 10))
W1 = rng.standard_normal((4, 4, 2, 3, 4, 4))  # R = 4, S = 2 on 10 x 10 -> 4 x 4


@pytest.mark.parametrize("name", list(SUBLAYERS))
def test_wrong_rank_names_the_input(name):
    entry = SUBLAYERS[name]
    case = entry.case(np.random.default_rng(1), np.float64)
    with pytest.raises(ValueError, match=r"must be 4-D"):
        entry.forward(case.x[0], case.params, **case.hyper)


@pytest.mark.parametrize("name", list(SUBLAYERS))
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_is_refused(name, bad):
    entry = SUBLAYERS[name]
    case = entry.case(np.random.default_rng(2), np.float64)
    x = case.x.copy()
    x.flat[0] = bad
    with pytest.raises(ValueError, match=r"contains NaN or inf \(1 of"):
        entry.forward(x, case.params, **case.hyper)


WEIGHTED = [(name, key) for name in SUBLAYERS
            for key in sorted(SUBLAYERS[name].case(np.random.default_rng(0), np.float64).params)]


@pytest.mark.parametrize("name,key", WEIGHTED)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("zero_input", [False, True])
@pytest.mark.filterwarnings("error")  # and the error comes alone, with no NumPy warning first
def test_non_finite_weights_are_refused_wherever_they_are(name, key, bad, zero_input):
    """Weights are checked through the layer's output (checks.check_finite_through): a NaN or
    inf anywhere must still be found and named, also where it meets zeros (inf * 0)."""
    entry = SUBLAYERS[name]
    rng = np.random.default_rng(4)
    case = entry.case(rng, np.float64)
    x = np.zeros_like(case.x) if zero_input else case.x
    for flat in rng.choice(case.params[key].size, size=6, replace=False):
        params = {k: v.copy() for k, v in case.params.items()}
        params[key].flat[flat] = bad
        with pytest.raises(ValueError, match=rf"{key} contains NaN or inf \(1 of"):
            entry.forward(x, params, **case.hyper)


def test_an_output_that_overflows_from_finite_values_is_not_an_input_error():
    x = np.full((2, 3, 10, 10), 1e30, dtype=np.float32)
    w = np.full(W1.shape, 1e30, dtype=np.float32)
    with pytest.warns(RuntimeWarning, match="overflow"):  # NumPy still says so
        f, _ = local_filter_forward(x, {"W1": w}, stride=2)
    assert np.isinf(f).all()


@pytest.mark.parametrize("name", list(SUBLAYERS))
@pytest.mark.parametrize("dtype", [np.int64, np.float16, np.complex128])
def test_wrong_dtype_is_a_type_error(name, dtype):
    entry = SUBLAYERS[name]
    case = entry.case(np.random.default_rng(3), np.float64)
    with pytest.raises(TypeError, match=r"must be float32 or float64"):
        entry.forward(case.x.astype(dtype), case.params, **case.hyper)


def test_not_an_array_is_a_type_error():
    with pytest.raises(TypeError, match=r"x must be an array, got list"):
        local_filter_forward(X.tolist(), {"W1": W1}, stride=2)


def test_mismatched_channels_name_both_sides():
    with pytest.raises(ValueError, match=r"W1 has 3 input channels .* input has C = 1"):
        local_filter_forward(X[:, :1], {"W1": W1}, stride=2)


def test_weight_grid_that_does_not_match_the_input():
    with pytest.raises(ValueError, match=r"W1 must have shape \(OH, OW, K, C, R, R\) = \(7, 7"):
        local_filter_forward(X, {"W1": W1}, stride=1)


def test_mixed_dtypes_are_refused():
    with pytest.raises(TypeError, match=r"x is float32, W1 is float64"):
        local_filter_forward(X.astype(np.float32), {"W1": W1}, stride=2)


def test_wrong_param_keys():
    with pytest.raises(ValueError, match=r"params must have keys \['W1'\]"):
        local_filter_forward(X, {"W": W1}, stride=2)
    with pytest.raises(ValueError, match=r"no parameters"):
        SUBLAYERS["l2pool"].forward(X, {"W1": W1}, window=2, stride=1, eps=0.1)


@pytest.mark.parametrize(
    "args, message",
    [
        ((10, 10, 11, 1), r"field size 11 does not fit the input \(H=10, W=10\)"),
        ((10, 10, 3, 0), r"field stride must be >= 1, got 0"),
        ((10, 10, 3.0, 1), r"field size must be an int, got 3.0"),
        ((10.5, 10, 3, 1), r"input height H must be an int"),
        ((10, 10, True, 1), r"field size must be an int, got True"),
    ],
)
def test_impossible_geometry(args, message):
    with pytest.raises(ValueError, match=message):
        make_grid(*args)


def test_pooling_window_larger_than_the_map():
    with pytest.raises(ValueError, match=r"pooling window size 6 does not fit"):
        l2pool_forward(X[:, :, :5, :5], window=6, stride=1, eps=0.1)


@pytest.mark.parametrize("eps", [0, -1.0, float("nan"), "0.1"])
def test_eps_must_be_positive(eps):
    with pytest.raises(ValueError, match=r"eps must be a number > 0"):
        l2pool_forward(X, window=2, stride=1, eps=eps)


@pytest.mark.parametrize(
    "hyper, message",
    [
        ({"window": 4}, r"odd int"),
        ({"window": 5, "width": 0.0}, r"width"),
        ({"window": 5, "c": 0.0}, r"c must be > 0"),
        ({"window": 5, "border": "wrap"}, r"border must be one of"),
    ],
)
def test_lcn_hyperparameters(hyper, message):
    with pytest.raises(ValueError, match=message):
        lcn_forward(X, **hyper)


def test_decoder_needs_an_output_size_that_matches_the_grid():
    f = rng.standard_normal((2, 2, 4, 4))
    with pytest.raises(ValueError, match=r"W2 must have shape"):
        local_decoder_forward(f, {"W2": W1}, stride=2, out_size=(14, 14))
    with pytest.raises(ValueError, match=r"out_size must be a pair"):
        local_decoder_forward(f, {"W2": W1}, stride=2, out_size=10)


def test_backward_checks_the_upstream_gradient_shape():
    _, cache = local_filter_forward(X, {"W1": W1}, stride=2)
    with pytest.raises(ValueError, match=r"df must have shape \(B, K, OH, OW\) = \(2, 2, 4, 4\)"):
        local_filter_backward(np.zeros((2, 2, 4, 5)), cache)
    _, pcache = l2pool_forward(X, window=2, stride=2, eps=0.1)
    with pytest.raises(ValueError, match=r"dp must have shape"):
        l2pool_backward(np.zeros((2, 3, 4, 4)), pcache)


def test_objective_lambda_must_be_nonnegative():
    params = {"W1": W1, "W2": W1.copy()}
    with pytest.raises(ValueError, match=r"lam .* must be a number >= 0"):
        objective_forward(X, params, stride=2, pool_window=2, pool_stride=1, lam=-0.1, eps=0.1)
