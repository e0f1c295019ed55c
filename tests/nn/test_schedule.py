"""The learning-rate schedules give the rates they document."""
import math

import pytest

from pipeline.nn.schedule import Schedule


def test_constant_keeps_the_rate():
    lr_at = Schedule("constant", 0.01, epochs=5)
    assert [lr_at(t) for t in (0, 2.5, 5)] == [0.01, 0.01, 0.01]


def test_step_multiplies_by_gamma_every_few_epochs():
    lr_at = Schedule("step", 0.1, epochs=10, step_epochs=3, step_gamma=0.5)
    rates = [lr_at(t) for t in (0, 2.99, 3, 5.5, 6, 9.9)]
    assert rates == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025, 0.0125])


def test_cosine_falls_from_lr_to_lr_min_along_half_a_cosine():
    lr_at = Schedule("cosine", 0.01, epochs=8, lr_min=0.001)
    assert lr_at(0) == pytest.approx(0.01)
    assert lr_at(4) == pytest.approx(0.0055)                 # half way: the mean of the ends
    assert lr_at(2) == pytest.approx(0.001 + 0.009 * (1 + math.cos(math.pi / 4)) / 2)
    assert lr_at(8) == pytest.approx(0.001)
    assert lr_at(9) == pytest.approx(0.001)                 # stays at the floor past the end
    rates = [lr_at(t / 10) for t in range(81)]
    assert all(a > b for a, b in zip(rates, rates[1:]))


def test_an_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="cosine"):
        Schedule("linear", 0.01, epochs=3)
