"""Timed training epochs: `fit.fit`'s, the matmul-only floor, PyTorch's and each
distortion alone, by turns in one run; a profile of one epoch; and prediction with
the fitted weights."""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from pipeline.bench.distortions import augment_epoch
from pipeline.bench.machine import PAUSE
from pipeline.bench.table import row
from pipeline.bench.torch_net import TorchNet
from pipeline.config.sections import Train
from pipeline.nn import network
from pipeline.training import fit
from pipeline.training.augment import Augmenter


def epoch_gflop(n: int, n_val: int, n_in: int, hidden: int, n_out: int = 10) -> float:
    """GFLOP in the matrix products of one `fit.fit` epoch: per training row,
    X @ W1 and X.T @ dh (784 x H each) plus three of H x 10; per validation row,
    the forward pass. A multiply-add counts as two."""
    per_row = 2 * n_in * hidden + 3 * hidden * n_out
    return 2 * (n * per_row + n_val * (n_in * hidden + hidden * n_out)) / 1e9


def matmul_epoch(X: np.ndarray, X_val: np.ndarray, params: dict, batch_size: int,
                 predict_rows: int = 4096) -> float:
    """Seconds for the float32 matrix products of one epoch and nothing else: the
    same shapes as `fit.fit`, into preallocated arrays, on contiguous rows."""
    W1, W2 = params["W1"], params["W2"]
    h = np.empty((max(batch_size, predict_rows), W1.shape[1]), np.float32)
    z = np.empty((len(h), W2.shape[1]), np.float32)
    dh = np.empty_like(h)
    gW1, gW2 = np.empty_like(W1), np.empty_like(W2)
    started = time.perf_counter()
    for start in range(0, len(X), batch_size):
        xb = X[start:start + batch_size]
        m = len(xb)
        np.matmul(xb, W1, out=h[:m])                   # forward
        np.matmul(h[:m], W2, out=z[:m])
        np.matmul(h[:m].T, z[:m], out=gW2)             # backward
        np.matmul(z[:m], W2.T, out=dh[:m])
        np.matmul(xb.T, dh[:m], out=gW1)
    for start in range(0, len(X_val), predict_rows):   # the epoch's validation pass
        xb = X_val[start:start + predict_rows]
        np.matmul(xb, W1, out=h[:len(xb)])
        np.matmul(h[:len(xb)], W2, out=z[:len(xb)])
    return time.perf_counter() - started


def time_training(X: np.ndarray, y: np.ndarray, X_val: np.ndarray, y_val: np.ndarray,
                  hp: Train, repeats: int, torch, distortions: dict[str, Augmenter]
                  ) -> tuple[dict, dict[str, list[float]], dict]:
    """Train `repeats` + 1 epochs with `fit.fit` and `hp` (`Train.plain`, so that the
    epochs are the work PyTorch does too); after each, a matmul-only epoch,
    each of `distortions` alone, and PyTorch epochs in its default and flush-denormal
    modes (when `torch` is given).

    Returns (the fitted params; seconds per epoch of "numpy", "matmul", each
    distortion, "torch" and "torch_ftz", the first round left out; the PyTorch
    networks by mode)."""
    init = network.init_params(np.random.default_rng(0), X.shape[1], hp.hidden, 10)
    contenders = {mode: TorchNet(torch, init, hp.lr, hp.rms_decay, hp.eps, hp.l2)
                  for mode in ("torch", "torch_ftz")} if torch else {}
    torch_rng, aug_rng = np.random.default_rng(2), np.random.default_rng(4)
    times = {k: [] for k in ["numpy", "matmul", *distortions, *contenders]}
    scratch = np.empty_like(X)

    def between_epochs(history_row: dict) -> None:
        # The pauses let one library's idle threads stop spinning before the next runs.
        took = {"numpy": history_row["seconds"]}
        time.sleep(PAUSE)
        took["matmul"] = matmul_epoch(X, X_val, init, hp.batch_size)
        for name, distort in distortions.items():
            took[name] = augment_epoch(X, distort, aug_rng, scratch, hp.batch_size)
        for mode, net in contenders.items():
            time.sleep(PAUSE)
            took[mode] = net.epoch(X, y, X_val, y_val, hp.batch_size, torch_rng,
                                   flush_denormal=mode == "torch_ftz")
        time.sleep(PAUSE)
        if history_row["epoch"] > 1:                     # the first round warms up
            for k, v in took.items():
                times[k].append(v)

    fitted, _ = fit.fit(X, y, X_val, y_val, dataclasses.replace(hp, epochs=repeats + 1),
                          rng=np.random.default_rng(1), on_epoch=between_epochs)
    return fitted, times, contenders


def profile_epoch(X: np.ndarray, y: np.ndarray, X_val: np.ndarray, y_val: np.ndarray,
                  hp: Train, top: int = 8) -> None:
    """Print where one `fit.fit` epoch spends its time, by function (cProfile's own
    time; a matrix product counts to the function that calls it)."""
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.runcall(fit.fit, X, y, X_val, y_val, dataclasses.replace(hp, epochs=1),
                     rng=np.random.default_rng(3))
    stats = pstats.Stats(profiler).stats                # {(file, line, name): (.., tottime, ..)}
    total = sum(v[2] for v in stats.values())
    for (path, _, name), v in sorted(stats.items(), key=lambda kv: -kv[1][2])[:top]:
        where = f"{Path(path).stem}." if path.endswith(".py") else ""
        print(f"profile: {v[2]:6.3f} s {100 * v[2] / total:3.0f}%  {where}{name.strip('<>')} "
              f"({v[1]} calls)")


def time_prediction(fitted: dict, X_test: np.ndarray, batch_size: int) -> None:
    """Print the images per second of `network.predict_proba` on X_test (n, 784) with
    the weights `fitted`, the best of 3."""
    pred_times = []
    for _ in range(3):
        started = time.perf_counter()
        network.predict_proba(fitted, X_test, batch_size).argmax(axis=1)
        pred_times.append(time.perf_counter() - started)
    row("prediction, images/s", f"{len(X_test) / min(pred_times):,.0f}",
        f"{len(X_test)} test images in {min(pred_times):.3f} s (best of 3)")
