"""The hand-written backward pass against central differences, and the forward pass."""
import numpy as np
import pytest

from pipeline.nn import network


def tiny_net(rng, n_in=6, hidden=5):
    """A float64 net with non-zero biases, so every gradient term is exercised."""
    params = {k: v.astype(np.float64) for k, v in network.init_params(rng, n_in, hidden, 10).items()}
    params["b1"] = rng.normal(0, 0.5, hidden)
    params["b2"] = rng.normal(0, 0.5, 10)
    return params


@pytest.mark.parametrize("l2,distill", [(0.0, None), (0.1, None), (0.1, (3.0, 0.7)),
                                        (0.0, (1.0, 1.0))])
def test_backward_matches_central_differences(rng, l2, distill):
    params = tiny_net(rng)
    X = rng.random((7, 6))
    y = rng.integers(0, 10, 7)
    soft = {}
    if distill:                                    # soft targets: rows of a random distribution
        targets = rng.random((7, 10))
        soft = dict(targets=targets / targets.sum(axis=1, keepdims=True),
                    temperature=distill[0], weight=distill[1])
    probs, h = network.forward(params, X)
    grads = network.backward(params, X, h, probs, y, l2, **soft)
    step = 1e-6
    for name, p in params.items():
        numeric = np.empty_like(p)
        for i in np.ndindex(p.shape):
            saved = p[i]
            p[i] = saved + step
            up = network.loss(params, X, y, l2, **soft)
            p[i] = saved - step
            down = network.loss(params, X, y, l2, **soft)
            p[i] = saved
            numeric[i] = (up - down) / (2 * step)
        np.testing.assert_allclose(grads[name], numeric, rtol=1e-5, atol=1e-8, err_msg=name)


def test_backward_reuses_buffers(rng):
    params = tiny_net(rng)
    X, y = rng.random((4, 6)), np.array([0, 3, 9, 3])
    probs, h = network.forward(params, X)
    first = network.backward(params, X, h, probs.copy(), y, 0.0)
    again = network.backward(params, X, h, probs.copy(), y, 0.0,
                             grads={k: np.full_like(v, np.nan) for k, v in params.items()})
    for name in params:
        np.testing.assert_array_equal(first[name], again[name])


def test_softmax_rows_sum_to_one_even_for_huge_logits():
    z = np.array([[1000.0, 1001.0, 999.0], [-5.0, 0.0, 5.0]], np.float32)
    p = network.softmax_(z.copy())
    assert np.isfinite(p).all()
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-6)
    e = np.exp([1.0, 2.0, 0.0])
    np.testing.assert_allclose(p[0], e / e.sum(), rtol=1e-6)   # shifting logits changes nothing


def test_init_is_he_scaled_and_float32(rng):
    params = network.init_params(rng, 784, 256, 10)
    assert {k: v.shape for k, v in params.items()} == {
        "W1": (784, 256), "b1": (256,), "W2": (256, 10), "b2": (10,)}
    assert all(v.dtype == np.float32 for v in params.values())
    assert abs(params["W1"].std() - np.sqrt(2 / 784)) < 0.002
    assert not params["b1"].any()


def test_predict_proba_is_batch_size_independent(rng):
    params = network.init_params(rng, 20, 8, 10)
    X = rng.random((50, 20), dtype=np.float32)
    whole = network.predict_proba(params, X, batch_size=50)
    np.testing.assert_allclose(network.predict_proba(params, X, batch_size=7), whole, rtol=1e-5)
    np.testing.assert_allclose(whole.sum(axis=1), 1.0, rtol=1e-5)


def test_cross_entropy_of_a_known_case():
    probs = np.array([[0.5, 0.5], [0.25, 0.75]])
    assert network.cross_entropy(probs, np.array([0, 1])) == pytest.approx(
        -(np.log(0.5) + np.log(0.75)) / 2)
