"""Ensemble members trained side by side on threads: the same networks as one at a
time, errors that stop them all, and checkpoints that hold several members."""
import threading
import time

import numpy as np
import pytest
from helpers import train_settings

from pipeline.nn import network
from pipeline.training import checkpoint, members, threads


@pytest.fixture(scope="module")
def data():
    """(X, y, X_val, y_val): 160 + 40 random images, enough to train on for a test."""
    rng = np.random.default_rng(0)
    X, y = rng.random((200, 784), dtype=np.float32), rng.integers(0, 10, 200)
    return X[:160], y[:160], X[160:], y[160:]


CFG = dict(hidden=16, epochs=3, batch_size=32, augment_rotate=5.0, members=3)
FIT = members.fit


def trained(data, tmp_path, monkeypatch, at_once, seen=None, meet=None, **changes):
    """train_networks on two cores with `at_once` members at a time, one BLAS thread
    each: (networks, history, the threads fit ran on and BLAS's threads there).
    `seen`, if given, gets the member of each epoch shown; `meet`, a barrier that
    each member waits at once its first epoch is shown."""
    from threadpoolctl import threadpool_limits
    monkeypatch.setattr(threads, "cores", lambda: 2)
    names = []

    def watched(*args, on_epoch, **kwargs):
        def shown(row):                     # BLAS's threads while the network trains
            names.append((threading.current_thread().name, threads.blas_threads()))
            on_epoch(row)
            if seen is not None:
                seen.append(row["member"])
            if meet is not None and row["epoch"] == 1:
                meet.wait()
        return FIT(*args, on_epoch=shown, **kwargs)

    monkeypatch.setattr(members, "fit", watched)
    cfg = train_settings(**{**CFG, **changes})
    with threadpool_limits(2, user_api="blas"):
        nets, history = members.train_networks(*data, seed=0, networks=cfg.members, cfg=cfg,
                                             saved_at=tmp_path / "checkpoint.npz", stamp="s",
                                             parallel=(at_once, 1))
    return nets, history, names


def test_members_side_by_side_are_those_trained_one_at_a_time(data, tmp_path, monkeypatch):
    alone, alone_rows, alone_threads = trained(data, tmp_path / "a", monkeypatch, at_once=1)
    beside, beside_rows, beside_threads = trained(data, tmp_path / "b", monkeypatch, at_once=2)
    assert set(alone_threads) == {("MainThread", 1)}            # its feed takes a core
    # Members 0 and 1 together, each with one BLAS thread, then member 2 alone.
    assert set(beside_threads) == {("MainThread", 1), ("job-0", 1), ("job-1", 1)}
    assert [name for name, _ in beside_threads[-3:]] == ["MainThread"] * 3
    for a, b in zip(alone, beside, strict=True):
        for name in network.PARAM_NAMES:
            np.testing.assert_array_equal(a[name], b[name])
    strip = [[{k: v for k, v in row.items() if k != "seconds"} for row in rows]
             for rows in (alone_rows, beside_rows)]
    assert strip[0] == strip[1]                       # in member order, then epoch order
    assert [row["member"] for row in beside_rows] == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_side_by_side_needs_distortions_a_spare_core_and_a_global_limit(monkeypatch):
    best = train_settings(augment_rotate=5.0, members=5)
    monkeypatch.setattr(threads, "limit_is_global", lambda: True)
    for cores, blas, expected in [(2, 2, (2, 1)), (4, 4, (1, 3)), (8, 1, (5, 1)), (1, 1, (1, 1))]:
        monkeypatch.setattr(threads, "cores", lambda: cores)
        monkeypatch.setattr(threads, "blas_threads", lambda: blas)
        assert members.side_by_side(best) == expected, (cores, blas)
    plain = train_settings(augment_shift=0.0, augment_rotate=0.0, members=5).plain()
    assert members.side_by_side(plain) == (1, 1)          # one at a time, every BLAS thread
    monkeypatch.setattr(threads, "limit_is_global", lambda: False)     # an OpenMP BLAS
    assert members.side_by_side(best) == (1, 1)
    monkeypatch.setattr(threads, "blas_threads", lambda: None)         # no threadpoolctl
    assert members.side_by_side(best) == (1, 1)
    monkeypatch.setattr(threads, "limit_is_global", lambda: True)
    monkeypatch.setattr(threads, "cores", lambda: 2)
    monkeypatch.setattr(threads, "blas_threads", lambda: 2)
    shifts = train_settings(augment_shift=1.0, augment_rotate=0.0, members=5)
    assert members.side_by_side(shifts) == (1, 2)         # made in line: no feed to leave a core
    monkeypatch.setattr(threads, "blas_threads", lambda: 1)
    assert members.side_by_side(shifts) == (2, 1)         # a core to spare: side by side


def test_a_stopped_side_by_side_run_resumes_both_members(data, tmp_path, monkeypatch):
    whole, rows, _ = trained(data, tmp_path / "whole", monkeypatch, at_once=2, members=2)
    save = checkpoint.save

    def save_then_fail(path, stamp, done, training):
        save(path, stamp, done, training)
        if len(training) == 2:                        # both members are midway
            raise OSError("disk gone")

    monkeypatch.setattr(checkpoint, "save", save_then_fail)
    shown = []
    # Both members midway at once, however the threads are scheduled: on so few rows
    # one member could otherwise finish before the other began.
    both = threading.Barrier(2, timeout=30)
    with pytest.raises(OSError, match="disk gone"):
        trained(data, tmp_path / "cut", monkeypatch, at_once=2, seen=shown, meet=both,
                members=2)
    saved = checkpoint.load(tmp_path / "cut" / "checkpoint.npz", "s")
    assert saved is not None and saved[0] == {} and sorted(saved[1]) == [0, 1]
    # Every epoch shown was saved: the member that was stopped finished its epoch first.
    assert {k: state.epoch for k, state in saved[1].items()} == {
        k: shown.count(k) for k in (0, 1)}
    monkeypatch.setattr(checkpoint, "save", save)
    again, again_rows, _ = trained(data, tmp_path / "cut", monkeypatch, at_once=2, members=2)
    for a, b in zip(whole, again, strict=True):
        for name in network.PARAM_NAMES:
            np.testing.assert_array_equal(a[name], b[name])
    assert [r["loss"] for r in again_rows] == [r["loss"] for r in rows]


def test_together_stops_the_others_and_raises_the_first_error():
    seen = []

    def failing(stop):
        time.sleep(0.05)
        raise ValueError("member 1 diverged")

    def patient(stop):
        if stop.wait(5):                    # not forever, should `together` not set it
            seen.append("stopped")
            raise threads.Stopped

    started = time.perf_counter()
    with pytest.raises(ValueError, match="member 1 diverged"):
        threads.together([patient, failing])
    assert seen == ["stopped"] and time.perf_counter() - started < 5


def test_ctrl_c_stops_every_job_at_its_next_chance_then_is_raised():
    import _thread
    import signal
    ended = []

    def job(stop):
        # Long enough for a loaded machine (a 5 s wait once timed out in a job while
        # other runs kept both cores busy); a together that never stops still fails.
        if stop.wait(60):
            ended.append(threading.current_thread().name)
            raise threads.Stopped

    # Python's own Ctrl-C handler, even where a shell started the tests in the
    # background: it ignores Ctrl-C there, and interrupt_main then does nothing.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        threading.Timer(0.1, _thread.interrupt_main).start()      # as Ctrl-C would
        with pytest.raises(KeyboardInterrupt):
            threads.together([job, job])
    finally:
        signal.signal(signal.SIGINT, previous)
    assert sorted(ended) == ["job-0", "job-1"]


def test_together_waits_for_the_jobs_not_for_what_threading_says(monkeypatch):
    """A Ctrl-C that lands in Thread.join can mark a running thread as ended (CPython
    issue 90882); together must wait for the jobs themselves, Ctrl-C or not."""
    import _thread
    import signal
    monkeypatch.setattr(threading.Thread, "is_alive", lambda self: False)
    ended = []

    def job(stop):
        stop.wait(0.3)                      # Ctrl-C comes after 0.1 s, or not at all
        time.sleep(0.2)                     # then the job finishes writing, say
        ended.append(threading.current_thread().name)

    threads.together([job, job])
    assert sorted(ended) == ["job-0", "job-1"]
    ended.clear()
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        threading.Timer(0.1, _thread.interrupt_main).start()
        with pytest.raises(KeyboardInterrupt):
            threads.together([job, job])
    finally:
        signal.signal(signal.SIGINT, previous)
    assert sorted(ended) == ["job-0", "job-1"]


def test_together_runs_its_jobs_at_once():
    meet = threading.Barrier(2, timeout=5)          # broken unless both wait at once
    threads.together([lambda stop: meet.wait(), lambda stop: meet.wait()])
