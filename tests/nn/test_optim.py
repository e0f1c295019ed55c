"""One RMSprop step against numbers worked out by hand."""
import warnings

import numpy as np
import pytest

from pipeline.nn import optim
from pipeline.nn.optim import RMSprop


def test_first_and_second_step_by_hand():
    p = np.array([1.0, -2.0], np.float32)
    g = np.array([0.5, -4.0], np.float32)
    opt = RMSprop(p, lr=0.1, decay=0.9, eps=1e-8)
    opt.step(p, g)
    # s = 0.1 * g**2 = [0.025, 1.6]; sqrt(s) = [0.158114, 1.264911]
    # p -= 0.1 * g / sqrt(s) = 0.1 * [3.162278, -3.162278]
    np.testing.assert_allclose(opt.mean_sq, [0.025, 1.6], rtol=1e-6)
    np.testing.assert_allclose(p, [1 - 0.3162278, -2 + 0.3162278], rtol=1e-6)
    opt.step(p, g)
    # s = 0.9 * [0.025, 1.6] + 0.1 * [0.25, 16] = [0.0475, 3.04]
    np.testing.assert_allclose(opt.mean_sq, [0.0475, 3.04], rtol=1e-6)
    step2 = 0.1 * np.array([0.5, -4.0]) / np.sqrt([0.0475, 3.04])
    np.testing.assert_allclose(p, [1 - 0.3162278 - step2[0], -2 + 0.3162278 - step2[1]],
                               rtol=1e-6)


def test_eps_guards_zero_gradients():
    p = np.zeros(3, np.float32)
    opt = RMSprop(p, lr=0.1, decay=0.9, eps=1e-8)
    opt.step(p, np.zeros(3, np.float32))
    assert np.isfinite(p).all() and not p.any()


def test_step_is_in_place_and_keeps_dtype():
    w = np.ones((2, 2), np.float32)
    before = w
    RMSprop(w, lr=0.01).step(w, np.full((2, 2), 0.3, np.float32))
    assert w is before and w.dtype == np.float32
    assert w[0, 0] == pytest.approx(1 - 0.01 / np.sqrt(0.1), rel=1e-5)


def test_eps_is_added_after_the_square_root():
    # With eps = 0.5 the two placements differ plainly: s = 0.1 * 4**2 = 1.6, and
    # 0.1 * 4 / (sqrt(1.6) + 0.5) = 0.226640, where sqrt(1.6 + 0.5) would give 0.276026.
    p = np.zeros(1, np.float32)
    RMSprop(p, lr=0.1, decay=0.9, eps=0.5).step(p, np.full(1, 4.0, np.float32))
    np.testing.assert_allclose(p, [-0.226640], rtol=1e-5)


def test_flush_zeroes_subnormals_only():
    tiny = np.finfo(np.float32).tiny
    a = np.array([tiny, -tiny, tiny / 2, -tiny / 1024, 1e-45, 0.0, 1.0, -3e-30], np.float32)
    assert optim.count_subnormal(a) == 3
    optim.flush_subnormals_(a)
    np.testing.assert_array_equal(a, np.array([tiny, -tiny, 0, 0, 0, 0, 1, -3e-30], np.float32))
    assert optim.count_subnormal(a) == 0


def test_flushes_every_flush_every_steps():
    """A weight and average already subnormal are zeroed at the flush_every-th step."""
    p = np.array([1e-39, 0.5], np.float32)
    opt = RMSprop(p, lr=0.0, flush_every=3)
    opt.mean_sq[:] = [1e-40, 1.0]
    zero = np.zeros(2, np.float32)
    for steps, expected in ((1, 1), (2, 1), (3, 0)):
        opt.step(p, zero)
        assert opt.steps == steps                         # checkpoints save this count
        assert optim.count_subnormal(p) == expected
    assert optim.count_subnormal(opt.mean_sq) == 0 and p[1] == 0.5


@pytest.mark.parametrize("l2", [0.0, 1e-4])
def test_compiled_step_gives_the_numpy_steps_bits(l2):
    """The fused loop and the NumPy step, 320 steps of gradients that span float32's
    range (zeros, subnormals, huge values, the L2-only weights that shrink), give the
    same weights and averages to the bit, flushes and all, with the L2 term or not."""
    assert optim._fused_step() is not None, "numba is in requirements.txt"
    rng = np.random.default_rng(7)
    size = 4099                                       # not a multiple of any vector width
    p0 = rng.standard_normal(size).astype(np.float32)
    pa, pb = p0.copy(), p0.copy()
    a, b = (RMSprop(p, lr=0.002, decay=0.9, eps=1e-8, l2=l2, penalised=4000) for p in (pa, pb))
    for step in range(320):
        g = (rng.standard_normal(size) * 10.0 ** rng.integers(-45, 18, size)).astype(np.float32)
        g[rng.random(size) < 0.2] = 0
        g[:500] = 0 if l2 else 1e-4 * pa[:500]        # only an L2 term, as for blank pixels
        a.lr = b.lr = 0.002 * (1 - step / 320)
        g_copy = g.copy()
        a.step(pa, g)
        b.step_numpy(pb, g_copy)
        np.testing.assert_array_equal(g, g_copy)      # both add the L2 term to grads
    np.testing.assert_array_equal(pa, pb)
    np.testing.assert_array_equal(a.mean_sq, b.mean_sq)
    assert a.steps == b.steps == 320 and optim.count_subnormal(pa) == 0


def test_the_l2_term_is_l2_times_the_penalised_values_added_to_their_gradient():
    p = np.array([0.5, -2.0, 3.0], np.float32)
    g = np.array([0.1, 0.0, 0.0], np.float32)
    with_l2, by_hand, everywhere = p.copy(), p.copy(), p.copy()
    RMSprop(with_l2, lr=0.01, l2=0.1, penalised=2).step(with_l2, g.copy())
    by_hand_g = g + np.float32(0.1) * p * np.array([1, 1, 0], np.float32)
    assert by_hand_g.dtype == np.float32                # so that both take the same path
    RMSprop(by_hand, lr=0.01).step(by_hand, by_hand_g)
    np.testing.assert_array_equal(with_l2, by_hand)
    assert with_l2[2] == 3.0                          # past `penalised`: no term, no step
    RMSprop(everywhere, lr=0.01, l2=0.1).step(everywhere, g.copy())
    assert everywhere[2] < 3.0                        # by default every value is penalised


def assert_step_is_numpys(p: np.ndarray) -> None:
    """`step` on p and `step_numpy` on a copy give the same values and dtype."""
    q = p.copy()
    g = np.linspace(-1, 1, len(p)).astype(p.dtype)
    RMSprop(p, lr=0.01).step(p, g)
    RMSprop(q, lr=0.01).step_numpy(q, g)
    np.testing.assert_array_equal(p, q)
    assert p.dtype == q.dtype


def test_step_falls_back_to_numpy_for_other_arrays():
    """float64 or strided arrays take the NumPy step, with the same result as it."""
    for p in (np.ones(6), np.ones(12, np.float32)[::2]):
        assert_step_is_numpys(p)


def test_a_step_numba_cannot_compile_leaves_numpy_to_it(monkeypatch):
    """A compile error is a warning, then NumPy's step: training goes on, slower."""
    numba = pytest.importorskip("numba")

    def njit(**options):
        def compile_(fn):
            def call(*args):
                raise numba.core.errors.TypingError("cannot type this")
            return call
        return compile_

    monkeypatch.setattr(numba, "njit", njit)
    optim._fused_step.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="NumPy's version runs instead: cannot type this"):
            assert optim._fused_step() is None
        assert_step_is_numpys(np.ones(5, np.float32))
    finally:
        optim._fused_step.cache_clear()


def test_without_a_cache_folder_the_step_is_compiled_each_run(monkeypatch):
    """numba raises at decoration when no cache folder is writable (a read-only
    install): the step is then compiled without one, not left to NumPy."""
    numba = pytest.importorskip("numba")
    njit = numba.njit

    def no_cache_folder(cache=False, **options):
        if cache:
            raise RuntimeError("cannot cache function 'fused_step': no locator available")
        return njit(**options)

    monkeypatch.setattr(numba, "njit", no_cache_folder)
    optim._fused_step.cache_clear()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")                # no warning: it compiled
            assert optim._fused_step() is not None
        assert_step_is_numpys(np.ones(5, np.float32))
    finally:
        optim._fused_step.cache_clear()
