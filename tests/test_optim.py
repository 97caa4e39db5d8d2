"""Optimisers against steps computed by hand; pure vs in-place; clear errors."""

import numpy as np
import pytest

from refimpl.optim import adagrad_init, adagrad_update, init_state, sgd_update, update


def test_sgd_step_by_hand():
    params = {"a": np.array([1.0, -2.0]), "b": np.array([[0.5]])}
    grads = {"a": np.array([0.5, 4.0]), "b": np.array([[-1.0]])}
    new, state = sgd_update(params, grads, {}, lr=0.1)
    np.testing.assert_array_equal(new["a"], [0.95, -2.4])
    np.testing.assert_array_equal(new["b"], [[0.6]])
    assert state == {}
    np.testing.assert_array_equal(params["a"], [1.0, -2.0])  # inputs untouched


def test_adagrad_two_steps_by_hand():
    """eta_i = lr / sqrt(sum of squared gradients so far, this one included)."""
    w = {"w": np.array([1.0, 1.0, 1.0])}
    g1 = {"w": np.array([3.0, -4.0, 0.0])}
    g2 = {"w": np.array([4.0, 3.0, 0.0])}
    state = adagrad_init(w)
    w1, s1 = adagrad_update(w, g1, state, lr=0.5, floor=1e-8)
    # step 1: G = [9, 16, 0]; eta = [0.5/3, 0.5/4, 0.5/1e-8]; g = 0 in the last entry -> no move
    np.testing.assert_allclose(w1["w"], [1 - 0.5, 1 + 0.5, 1.0], rtol=0, atol=1e-15)
    np.testing.assert_array_equal(s1["w"], [9.0, 16.0, 0.0])
    w2, s2 = adagrad_update(w1, g2, s1, lr=0.5, floor=1e-8)
    # step 2: G = [25, 25, 0]; eta = 0.1 for both; w = [0.5 - 0.4, 1.5 - 0.3, 1]
    np.testing.assert_allclose(w2["w"], [0.1, 1.2, 1.0], rtol=0, atol=1e-15)
    np.testing.assert_array_equal(s2["w"], [25.0, 25.0, 0.0])
    np.testing.assert_array_equal(s1["w"], [9.0, 16.0, 0.0])  # pure: old state untouched


def test_adagrad_floor_bounds_the_rate():
    w, g = {"w": np.array([0.0])}, {"w": np.array([1e-6])}
    new, _ = adagrad_update(w, g, adagrad_init(w), lr=1.0, floor=1e-3)
    # sqrt(G) = 1e-6 < floor: eta = 1 / 1e-3, step = 1e3 * 1e-6
    np.testing.assert_allclose(new["w"], [-1e-3], rtol=1e-12)


@pytest.mark.parametrize("name", ["sgd", "adagrad"])
def test_inplace_is_bit_identical_to_pure(name):
    rng = np.random.default_rng(0)
    params = {k: rng.standard_normal((3, 4)).astype(np.float32) for k in "ab"}
    copy = {k: v.copy() for k, v in params.items()}
    state, state_copy = init_state(name, params), init_state(name, copy)
    for _ in range(3):
        grads = {k: rng.standard_normal((3, 4)).astype(np.float32) for k in "ab"}
        pure, state = update(name, params, grads, state, lr=0.01)
        same, state_copy = update(name, copy, grads, state_copy, lr=0.01, inplace=True)
        params = pure
        for k in params:
            np.testing.assert_array_equal(pure[k], same[k])
            assert pure[k].dtype == np.float32
    assert same["a"] is copy["a"]  # written into the caller's array


def test_bad_arguments_are_clear_errors():
    p, g = {"w": np.zeros(2)}, {"w": np.zeros(2)}
    with pytest.raises(ValueError, match="grads must have the keys of params"):
        sgd_update(p, {"v": np.zeros(2)}, {}, lr=0.1)
    with pytest.raises(ValueError, match=r"grads\['w'\] has shape"):
        sgd_update(p, {"w": np.zeros(3)}, {}, lr=0.1)
    with pytest.raises(ValueError, match="lr must be a number > 0"):
        sgd_update(p, g, {}, lr=0)
    with pytest.raises(ValueError, match="optimiser state must have the keys"):
        adagrad_update(p, g, {}, lr=0.1)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        init_state("adam", p)
