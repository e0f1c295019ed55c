"""The network's defaults and batching, as fit and predict use them."""
import numpy as np
import pytest

from pipeline.nn import network


def test_the_network_defaults_to_784_256_10():
    params = network.init_params(np.random.default_rng(0))
    assert {k: v.shape for k, v in params.items()} == network.shapes() == {
        "W1": (784, 256), "b1": (256,), "W2": (256, 10), "b2": (10,)}


def test_predict_proba_works_a_batch_at_a_time_in_float32(monkeypatch):
    params = network.init_params(np.random.default_rng(0), 20, 8, 10)
    X = np.random.default_rng(1).random((50, 20), dtype=np.float32)
    sizes = []
    real = network.forward
    monkeypatch.setattr(network, "forward", lambda p, x: (sizes.append(len(x)), real(p, x))[1])
    probs = network.predict_proba(params, X, batch_size=20)
    assert sizes == [20, 20, 10]                    # the batch size bounds the memory used
    assert probs.dtype == np.float32 and probs.shape == (50, 10)
    sizes.clear()
    network.predict_proba(params, np.zeros((5000, 20), np.float32))
    assert sizes == [4096, 904]                     # predict.batch_size's default


def test_an_unknown_schedule_names_the_known_ones():
    from pipeline.nn.schedule import Schedule
    with pytest.raises(ValueError, match="expected one of constant, step, cosine"):
        Schedule("linear", 0.01, epochs=3)
