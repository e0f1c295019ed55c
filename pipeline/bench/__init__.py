"""The speed benchmark: `python -m pipeline.bench` (`--help` for options).

Measures, on Kaggle-sized data (../shared/data/digit-recognizer beside the project
when present, else generated CSVs of the same shape), and prints one Markdown table
row per figure:
  - ingest: seconds to parse train.csv and test.csv, checks included;
  - training: seconds per epoch of `train.fit` at the default batch size, the GFLOP/s
    that achieves, and the same for a plain float32 matmul-only epoch of the same
    shapes (the floor everything else is measured against);
  - prediction: images per second;
  - the subnormal floats left in each parameter after those epochs (an Intel core
    computes with them about a hundred times slower; an AMD core barely slower);
  - the same network, batch size, RMSprop, L2 and float32 in PyTorch on the CPU,
    when it is installed (`pip install -r requirements-bench.txt`), side by side, in
    its default mode and with flush-denormal on (its best on Intel), and the
    matmul-only epoch against it: the best ratio any training epoch could reach;
  - augmentation: what shifts alone, params.yaml's and params-best.yaml's distortions add
    to a `train.fit` epoch, which makes them ahead on a second thread (and what they
    cost on one core alone), and the first and last epochs of a long distorted run
    (drift);
  - the whole default `python run.py`: wall seconds and peak resident memory.

The NumPy epochs are those of one `train.fit` run; after each, a matmul-only epoch
and a PyTorch epoch run, so that load from other programs hits all three alike and
the ratios come from one run. The first round warms up and is not counted; the
best of the other rounds is reported (other programs only ever add time), with the
median, the worst and the range of the per-round ratios to show the noise.
A benchmark, not a test: nothing here asserts a time.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from pipeline.config import params as params_mod
from pipeline.config.sections import Train
from pipeline.nn import network, optim
from pipeline.steps import ingest, preprocess
from pipeline.training import feed, train
from pipeline.training.augment import Augmenter
from pipeline.training.threads import cores

ROOT = Path(__file__).resolve().parents[2]
KAGGLE = ROOT.parent / "shared" / "data" / "digit-recognizer"
KAGGLE_ROWS = (42000, 28000)        # labelled, test
LIT_FRACTION = 0.19                 # share of non-zero pixels in an MNIST image
PAUSE = 0.25                        # s; OpenBLAS workers spin ~0.1 s after a product


# ---------------------------------------------------------------- data

def find_csvs(folder: Path) -> tuple[Path, Path] | None:
    """(train, test) in `folder`, plain or gzipped, or None when either is missing."""
    found = []
    for name in ("train", "test"):
        paths = [folder / f"{name}.csv", folder / f"{name}.csv.gz"]
        found.append(next((p for p in paths if p.is_file()), None))
    return None if None in found else (found[0], found[1])


def csv_bytes(table: np.ndarray) -> bytes:
    """The rows of an integer table (R, C) with values 0-255 as CSV lines, built
    with array operations (a Python loop over 55 million cells takes minutes)."""
    v = table.ravel().astype(np.int64)
    digits = 1 + (v >= 10) + (v >= 100)                  # characters in each value
    ends = np.cumsum(digits + 1)                          # one past each value's separator
    start = ends - digits - 1
    out = np.full(int(ends[-1]), ord(","), np.uint8)
    out[ends[table.shape[1] - 1::table.shape[1]] - 1] = ord("\n")
    out[start + digits - 1] = ord("0") + v % 10
    two, three = digits >= 2, digits == 3
    out[(start + digits - 2)[two]] = ord("0") + v[two] // 10 % 10
    out[start[three]] = ord("0") + v[three] // 100
    return out.tobytes()


def write_digits_csv(path: Path, images: np.ndarray, labels: np.ndarray | None) -> Path:
    """Write images (N, 784) uint8, and labels (N,) when given, in Kaggle's format."""
    header = (["label"] if labels is not None else []) + [f"pixel{i}" for i in range(784)]
    with open(path, "wb") as f:
        f.write((",".join(header) + "\n").encode())
        for start in range(0, len(images), 4096):            # bounded memory
            rows = images[start:start + 4096]
            if labels is not None:
                rows = np.column_stack([labels[start:start + 4096], rows])
            f.write(csv_bytes(rows))
    return path


def generate_csvs(folder: Path, n_train: int, n_test: int,
                  rng: np.random.Generator) -> tuple[Path, Path]:
    """Kaggle-format train.csv and test.csv of random images, as sparse as MNIST's.
    Their labels are random: the timings are real, an accuracy on them means nothing."""
    def images(n):
        lit = rng.random((n, 784)) < LIT_FRACTION
        return (lit * rng.integers(1, 256, (n, 784))).astype(np.uint8)   # (n, 784)

    return (write_digits_csv(folder / "train.csv", images(n_train), rng.integers(0, 10, n_train)),
            write_digits_csv(folder / "test.csv", images(n_test), None))


# ---------------------------------------------------------------- measurements

def epoch_gflop(n: int, n_val: int, n_in: int, hidden: int, n_out: int = 10) -> float:
    """GFLOP in the matrix products of one `train.fit` epoch: per training row,
    X @ W1 and X.T @ dh (784 x H each) plus three of H x 10; per validation row,
    the forward pass. A multiply-add counts as two."""
    per_row = 2 * n_in * hidden + 3 * hidden * n_out
    return 2 * (n * per_row + n_val * (n_in * hidden + hidden * n_out)) / 1e9


def matmul_epoch(X: np.ndarray, X_val: np.ndarray, params: dict, batch_size: int,
                 predict_rows: int = 4096) -> float:
    """Seconds for the float32 matrix products of one epoch and nothing else: the
    same shapes as `train.fit`, into preallocated arrays, on contiguous rows."""
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


class TorchNet:
    """The same network, loss, optimizer and L2 as `train.fit`, in PyTorch on the CPU,
    trained the way its documentation shows (nn.Linear, cross_entropy, backward,
    optim.RMSprop), starting from the same float32 weights."""

    def __init__(self, torch, params: dict, lr: float, rms_decay: float, eps: float, l2: float):
        self.torch = torch
        nn = torch.nn
        n_in, hidden = params["W1"].shape
        self.model = nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(),
                                   nn.Linear(hidden, params["W2"].shape[1]))
        layers = (self.model[0], self.model[2])
        with torch.no_grad():
            for layer, w, b in zip(layers, ("W1", "W2"), ("b1", "b2")):
                layer.weight.copy_(torch.from_numpy(params[w].T))   # nn.Linear keeps W.T
                layer.bias.copy_(torch.from_numpy(params[b]))
        # weight_decay adds l2 * W to a weight's gradient: the gradient of our penalty
        # (l2 / 2) * sum(W**2). Biases are not penalised, so their group has none.
        self.opt = torch.optim.RMSprop(
            [{"params": [layer.weight for layer in layers], "weight_decay": l2},
             {"params": [layer.bias for layer in layers], "weight_decay": 0.0}],
            lr=lr, alpha=rms_decay, eps=eps)

    def params(self) -> dict[str, np.ndarray]:
        """The weights in network.py's layout, as NumPy arrays."""
        first, second = self.model[0], self.model[2]
        return {"W1": first.weight.detach().numpy().T, "b1": first.bias.detach().numpy(),
                "W2": second.weight.detach().numpy().T, "b2": second.bias.detach().numpy()}

    def step(self, xb, yb) -> tuple[float, int]:
        """One RMSprop step on a batch of tensors; returns (mean loss, correct)."""
        F = self.torch.nn.functional
        logits = self.model(xb)
        loss = F.cross_entropy(logits, yb)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return loss.item(), int((logits.argmax(dim=1) == yb).sum())

    def epoch(self, X: np.ndarray, y: np.ndarray, X_val: np.ndarray, y_val: np.ndarray,
              batch_size: int, rng: np.random.Generator, flush_denormal: bool = False) -> float:
        """Seconds for one epoch as `train.fit` runs it: shuffled batches, the loss
        and accuracy of each, then the validation loss and accuracy. flush_denormal
        turns on the CPU's flush-to-zero mode for the epoch (in this thread only; it
        is turned off again before NumPy's epochs run)."""
        self.torch.set_flush_denormal(flush_denormal)
        try:
            return self._epoch(X, y, X_val, y_val, batch_size, rng)
        finally:
            self.torch.set_flush_denormal(False)

    def _epoch(self, X, y, X_val, y_val, batch_size, rng) -> float:
        torch = self.torch
        Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
        Xv, yv = torch.from_numpy(X_val), torch.from_numpy(y_val)
        started = time.perf_counter()
        order = torch.from_numpy(rng.permutation(len(X)))
        ce_sum, correct = 0.0, 0
        for start in range(0, len(X), batch_size):
            idx = order[start:start + batch_size]
            loss, right = self.step(Xt[idx], yt[idx])
            ce_sum += loss * len(idx)
            correct += right
        with torch.no_grad():
            logits = self.model(Xv)
            torch.nn.functional.cross_entropy(logits, yv).item()
            int((logits.argmax(dim=1) == yv).sum())
        return time.perf_counter() - started


def time_run(train_csv: Path, test_csv: Path, workdir: Path,
             env: dict) -> tuple[float, int, float | None, str]:
    """Run the default `python run.py` on the CSVs with a fresh outputs folder.

    Returns (wall seconds, its peak resident bytes (0 where /proc is missing), the
    validation accuracy it reports or None, the last lines of its output when it
    failed, else '')."""
    outputs, log = workdir / "outputs", workdir / "run.log"
    cmd = [sys.executable, str(ROOT / "run.py"), "--quiet", "--set", f"data.train={train_csv}",
           "--set", f"data.test={test_csv}", "--set", f"outputs={outputs}"]
    started = time.perf_counter()
    peak = 0
    with open(log, "w") as out:
        child = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL)
        # The kernel's peak of the run's own memory (VmHWM), read until it exits. Not
        # ru_maxrss: Linux carries the forking process's size over the exec into it,
        # and this one holds the benchmark's arrays (it read 912 MiB for a 586 MiB run).
        status_file = Path(f"/proc/{child.pid}/status")
        while child.poll() is None:
            with contextlib.suppress(OSError):          # no /proc, or the child just ended
                kib = [int(line.split()[1]) for line in status_file.read_text().splitlines()
                       if line.startswith("VmHWM:")]    # none once it has exited
                peak = max([peak] + [1024 * k for k in kib])
            time.sleep(0.02)
    wall = time.perf_counter() - started
    if child.returncode != 0:
        return wall, peak, None, "\n".join(log.read_text().splitlines()[-5:])
    accuracy = None
    for metrics in (outputs / "metrics.json", outputs / "train" / "metrics.json"):
        if metrics.is_file():
            accuracy = json.loads(metrics.read_text()).get("val_accuracy")
            break
    return wall, peak, accuracy, ""


# ---------------------------------------------------------------- reporting

def row(figure: str, value: str, detail: str = "") -> None:
    """Print one figure as a Markdown table row, ready to paste into the README."""
    print(f"| {figure} | {value} | {detail} |", flush=True)


def spread(times: list[float]) -> str:
    """How the timed epochs varied: a wide range means other programs were busy."""
    return (f"best of {len(times)}; median {np.median(times):.3f} s, "
            f"worst {max(times):.3f} s")


def ratios(mine: list[float], theirs: list[float]) -> str:
    """The range of the ratios of epochs timed in the same round."""
    r = np.divide(mine, theirs)
    return f"rounds {r.min():.2f}-{r.max():.2f}x"


def machine(threads: int, torch) -> str:
    """One line naming the CPU, the core count and the libraries."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        # A VM's model name can be bare ("AMD EPYC"); family and model tell the generation.
        fields = dict(line.split(":", 1) for line in
                      Path("/proc/cpuinfo").read_text().split("\n\n")[0].splitlines()
                      if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        if "model name" in fields:
            cpu = f"{fields['model name']} (family {fields.get('cpu family', '?')}, " \
                  f"model {fields.get('model', '?')})"
    blas = ""
    with contextlib.suppress(ImportError):
        from threadpoolctl import threadpool_info
        info = next((i for i in threadpool_info() if i["user_api"] == "blas"), None)
        if info:
            blas = f" ({info['internal_api']} {info['version']}, {info.get('architecture', '')})"
    if os.environ.get("OPENBLAS_CORETYPE"):      # overrides OpenBLAS's choice of kernels
        blas += f", OPENBLAS_CORETYPE={os.environ['OPENBLAS_CORETYPE']}"
    return (f"{cpu}, {os.cpu_count()} cores, {threads} threads; Python "
            f"{platform.python_version()}, NumPy {np.__version__}{blas}"
            + (f", PyTorch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()})"
               if torch else ", no PyTorch"))


def limit_threads(threads: int) -> contextlib.AbstractContextManager:
    """Cap the BLAS and OpenMP pools of this process at `threads` (threadpoolctl,
    an optional extra; without it only the run.py child is capped, through its
    environment)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        print("note: threadpoolctl is not installed, so NumPy in this process uses its "
              "default thread count (pip install -r requirements.txt)", flush=True)
        return contextlib.nullcontext()
    return threadpool_limits(threads)


# ---------------------------------------------------------------- main

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The benchmark's options."""
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=KAGGLE,
                        help="folder with train.csv and test.csv, plain or .gz "
                             "(default: %(default)s; generated data when absent)")
    parser.add_argument("--generate", type=int, nargs=2, metavar=("TRAIN", "TEST"),
                        help="use generated data of these row counts instead")
    parser.add_argument("--threads", type=int, default=cores(),
                        help="BLAS and PyTorch threads (default: this machine's %(default)s)")
    parser.add_argument("--repeats", type=int, default=7,
                        help="training epochs timed for each contender (default: %(default)s)")
    parser.add_argument("--drift-epochs", type=int, default=80, metavar="N",
                        help="distorted epochs whose first and last are compared "
                             "(default: %(default)s, as params-best.yaml; 0 skips)")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    parser.add_argument("--no-run", action="store_true", help="skip timing `python run.py`")
    parser.add_argument("--profile", action="store_true",
                        help="also print where one training epoch spends its time")
    args = parser.parse_args(argv)
    if args.threads < 1 or args.repeats < 1 or args.drift_epochs < 0:
        parser.error("--threads and --repeats must be at least 1, --drift-epochs at least 0")
    return args


def time_ingest(train_csv: Path, test_csv: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parse both CSVs as ingest does, report the seconds; return (train images,
    labels, test images)."""
    started = time.perf_counter()
    images, labels = ingest.read_digits_csv(train_csv, labelled=True)
    train_s = time.perf_counter() - started
    test_images, _ = ingest.read_digits_csv(test_csv, labelled=False)
    total = time.perf_counter() - started
    row("ingest, train.csv + test.csv", f"{total:.2f} s",
        f"{len(images)} + {len(test_images)} rows; train {train_s:.2f} s, "
        f"test {total - train_s:.2f} s")
    return images, labels, test_images


def distorted(cfg: Train, like: Train) -> Train:
    """cfg with the distortions of `like` (its augment_* and elastic_* fields)."""
    return dataclasses.replace(cfg, **{f.name: getattr(like, f.name)
                                       for f in dataclasses.fields(like)
                                       if f.name.startswith(("augment_", "elastic_"))})


def augment_epoch(X: np.ndarray, distort: Augmenter, rng: np.random.Generator,
                  out: np.ndarray, batch: int) -> float:
    """Seconds for an epoch's augmentation on one core, by itself: the shuffled copy
    of the rows and their distortion, as fit makes them (shifts made in line: batch
    by batch, as they are taken)."""
    started = time.perf_counter()
    order = rng.permutation(len(X))
    if feed.in_line(distort):
        shifts = distort.draw_shifts(len(X), rng)
        for start in range(0, len(X), batch):
            rows = order[start:start + batch]
            distort.take(X, rows, shifts[:, start:start + batch], out[:len(rows)])
    else:
        np.take(X, order, axis=0, out=out)
        distort(out, rng, out=out)
    return time.perf_counter() - started


def subnormals(params: dict) -> str:
    """"W1 0, b1 0, W2 0, b2 0": how many values of each parameter are subnormal."""
    return ", ".join(f"{k} {optim.count_subnormal(params[k])}" for k in network.PARAM_NAMES)


def time_training(X: np.ndarray, y: np.ndarray, X_val: np.ndarray, y_val: np.ndarray,
                  hp: Train, repeats: int, torch, distortions: dict[str, Augmenter]
                  ) -> tuple[dict, dict[str, list[float]], dict]:
    """Train `repeats` + 1 epochs with `train.fit` and `hp` (`Train.plain`, so that the
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

    fitted, _ = train.fit(X, y, X_val, y_val, dataclasses.replace(hp, epochs=repeats + 1),
                          rng=np.random.default_rng(1), on_epoch=between_epochs)
    return fitted, times, contenders


def time_drift(X: np.ndarray, y: np.ndarray, X_val: np.ndarray, y_val: np.ndarray, hp: Train,
               epochs: int, window: int = 5) -> None:
    """Train `epochs` epochs distorted as `hp` says and compare the first ones with the
    last: an epoch that slows down as training goes on shows here (on an Intel Xeon,
    subnormal weights slowed params-best.yaml's epochs from 1.6 s to 5.3 s over its 80)."""
    seconds = []
    train.fit(X, y, X_val, y_val, dataclasses.replace(hp, epochs=epochs),
              rng=np.random.default_rng(5), on_epoch=lambda r: seconds.append(r["seconds"]))
    window = max(1, min(window, epochs // 2))
    first, last = min(seconds[:window]), min(seconds[-window:])
    row(f"distorted epochs, first / last of {epochs}", f"{first:.3f} s / {last:.3f} s",
        f"params-best.yaml distortions; best of the first and of the last {window}; "
        f"last / first {last / first:.2f}x; target <= 1.2x")


def time_augmented(X: np.ndarray, y: np.ndarray, X_val: np.ndarray, y_val: np.ndarray,
                   hp: Train, likes: dict[str, Train], alone: dict[str, list[float]],
                   rounds: int, epochs: int = 3) -> None:
    """Print what each distortion of `likes` adds to a `train.fit` epoch, as the
    pipeline trains: fit makes each epoch's images ahead on a second thread
    (pipeline/feed.py), so the cost is what that does not hide, or shifts alone
    batch by batch as it takes them. Short fits, plain
    and distorted by turns, so that load hits them alike; the first epoch of each
    (made before training starts, nothing to hide it) is left out. `alone` holds
    the seconds of each distortion on one core by itself, for the detail."""
    cfgs = {"plain": hp, **{name: distorted(hp, like) for name, like in likes.items()}}
    times: dict[str, list[float]] = {name: [] for name in cfgs}
    for r in range(rounds):
        for name, cfg in cfgs.items():
            _, history = train.fit(X, y, X_val, y_val, dataclasses.replace(cfg, epochs=epochs),
                                   rng=np.random.default_rng([6, r]))
            times[name] += [h["seconds"] for h in history[1:]]
            time.sleep(PAUSE)
    plain_s = min(times["plain"])
    for (name, target) in zip(likes, ("0.25x", "0.5x", "0.5x")):
        added = min(times[name]) - plain_s
        row(f"{name}, s/epoch added", f"{added:.3f} s",
            f"{added / plain_s:.2f}x a plain epoch ({plain_s:.3f} s), target <= {target}; "
            f"fit's epochs, best of {len(times[name])}, distorted {min(times[name]):.3f} s, "
            f"median {np.median(times[name]):.3f} s; the distortion alone on one core "
            f"{min(alone[name]):.3f} s")


def time_members(X: np.ndarray, y: np.ndarray, X_val: np.ndarray, y_val: np.ndarray,
                 best: Train, workdir: Path, rounds: int = 2, epochs: int = 8) -> None:
    """Time two of `best`'s members trained one at a time and side by side
    (`train.side_by_side`), by turns, as `train.run` trains them."""
    at_once, each = train.side_by_side(best)
    if at_once < 2:
        row("ensemble members side by side", "not here",
            f"train.side_by_side trains them one at a time here ({each} BLAS thread(s) of "
            f"{cores()} cores for one network)")
        return
    cfg = dataclasses.replace(best, epochs=epochs, members=2)
    times: dict[tuple, list[float]] = {(1, each): [], (2, each): []}
    for r in range(rounds):
        for side in times:
            started = time.perf_counter()
            saved_at = workdir / f"members-{r}-{side[0]}.npz"      # no resuming
            train.train_networks(X, y, X_val, y_val, r, 2, cfg, saved_at, "bench", side=side)
            times[side].append(time.perf_counter() - started)
            time.sleep(PAUSE)
    alone, beside = min(times[(1, each)]), min(times[(2, each)])
    row("ensemble members side by side", f"{beside / alone:.2f}x one at a time",
        f"2 of params-best.yaml's members, {epochs} epochs each: {alone:.1f} s one at a "
        f"time, {beside:.1f} s side by side ({each} BLAS thread(s) each); best of {rounds}")


def report_training(times: dict[str, list[float]], gflop: float, rows: tuple[int, int],
                    batch: int, threads: int, torch, fitted: dict, contenders: dict) -> None:
    """Print the training rows. Other programs only ever add time, so the best epoch
    is the steadiest estimate; the median, worst and per-round ratios show the noise."""
    best = {k: min(v) for k, v in times.items()}
    row(f"training, s/epoch (batch {batch})", f"{best['numpy']:.3f} s",
        f"{rows[0]} rows + {rows[1]} validation; {spread(times['numpy'])}")
    row("training, GFLOP/s", f"{gflop / best['numpy']:.0f}",
        f"{gflop:.1f} GFLOP of matrix products per epoch")
    row("training, subnormal values", subnormals(fitted),
        f"in the weights after its {len(times['numpy']) + 1} epochs")
    row("matmul-only epoch, same shapes", f"{best['matmul']:.3f} s",
        f"{gflop / best['matmul']:.0f} GFLOP/s; {spread(times['matmul'])}")
    row("training / matmul-only", f"{best['numpy'] / best['matmul']:.2f}x",
        f"{ratios(times['numpy'], times['matmul'])}; target <= 1.6x")
    for mode, label, target in (("torch", "default", "0.35x"),
                                ("torch_ftz", "flush-denormal", "0.5x")):
        if mode in contenders:
            row(f"PyTorch {torch.__version__} {label}, s/epoch (batch {batch})",
                f"{best[mode]:.3f} s", f"same network, RMSprop, L2, float32; "
                f"{spread(times[mode])}; subnormal {subnormals(contenders[mode].params())}")
            row(f"training / PyTorch {label}", f"{best['numpy'] / best[mode]:.2f}x",
                f"{threads} threads each; {ratios(times['numpy'], times[mode])}; "
                f"target <= {target}")
    if contenders:
        # Products alone, at this BLAS's speed: no training epoch can do better.
        fastest = min(contenders, key=lambda m: best[m])
        row("matmul-only / PyTorch's best", f"{best['matmul'] / best[fastest]:.2f}x",
            f"the floor of training / PyTorch; {ratios(times['matmul'], times[fastest])}")


def profile_epoch(X: np.ndarray, y: np.ndarray, X_val: np.ndarray, y_val: np.ndarray,
                  hp: Train, top: int = 8) -> None:
    """Print where one `train.fit` epoch spends its time, by function (cProfile's own
    time; a matrix product counts to the function that calls it)."""
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.runcall(train.fit, X, y, X_val, y_val, dataclasses.replace(hp, epochs=1),
                     rng=np.random.default_rng(3))
    stats = pstats.Stats(profiler).stats                # {(file, line, name): (.., tottime, ..)}
    total = sum(v[2] for v in stats.values())
    for (path, _, name), v in sorted(stats.items(), key=lambda kv: -kv[1][2])[:top]:
        where = f"{Path(path).stem}." if path.endswith(".py") else ""
        print(f"profile: {v[2]:6.3f} s {100 * v[2] / total:3.0f}%  {where}{name.strip('<>')} "
              f"({v[1]} calls)")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print one table row per figure."""
    args = parse_args(argv)
    torch = None
    if not args.no_torch:
        with contextlib.suppress(ImportError):
            import torch
            torch.set_num_threads(args.threads)
    p = params_mod.load(ROOT / "params.yaml")
    default = Train.of(p)
    hp = default.plain()                # the work PyTorch does too
    env = {**os.environ, **{v: str(args.threads) for v in (
        "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}}

    with tempfile.TemporaryDirectory(prefix="bench-") as tmp, limit_threads(args.threads):
        tmp = Path(tmp)
        csvs = None if args.generate else find_csvs(args.data)
        if csvs is None:
            n_train, n_test = args.generate or KAGGLE_ROWS
            csvs = generate_csvs(tmp, n_train, n_test, np.random.default_rng(0))
            source = f"generated, {n_train} labelled + {n_test} test rows, random labels"
        else:
            source = str(csvs[0].parent)
        print(f"machine: {machine(args.threads, torch)}")
        print(f"data: {source}")
        print("| figure | value | detail |\n|---|---|---|", flush=True)

        images, labels, test_images = time_ingest(*csvs)
        # The split and scaling of the preprocess stage, in memory.
        train_idx, val_idx = preprocess.stratified_split(
            labels, p["preprocess.val_fraction"], np.random.default_rng([p["seed"], 1]))
        X, y = preprocess.scale(images[train_idx]), labels[train_idx]          # (N, 784)
        X_val, y_val = preprocess.scale(images[val_idx]), labels[val_idx]
        X_test = preprocess.scale(test_images)
        del images, test_images

        best = Train.of(params_mod.load(ROOT / "params-best.yaml"))
        # Shifts alone are made in line while BLAS has every core (feed.in_line);
        # params.yaml also rotates.
        likes = {"shifts (params.yaml's)": dataclasses.replace(
                     hp, augment_shift=default.augment_shift),
                 "distortions (params.yaml)": default,
                 "distortions (params-best.yaml)": best}
        distortions = {name: train.augmenter(like, 28) for name, like in likes.items()}
        fitted, times, contenders = time_training(X, y, X_val, y_val, hp, args.repeats, torch,
                                                  distortions)
        report_training(times, epoch_gflop(len(X), len(X_val), X.shape[1], hp.hidden),
                        (len(X), len(X_val)), hp.batch_size, args.threads, torch, fitted,
                        contenders)
        time_augmented(X, y, X_val, y_val, hp, likes, {k: times[k] for k in distortions},
                       max(2, args.repeats // 2))
        time_members(X, y, X_val, y_val, best, tmp)
        if args.drift_epochs:
            time_drift(X, y, X_val, y_val, distorted(hp, best), args.drift_epochs)
        if torch is None and not args.no_torch:
            row("PyTorch comparison", "skipped",
                "not installed: pip install -r requirements-bench.txt")

        if args.profile:
            profile_epoch(X, y, X_val, y_val, hp)

        pred_times = []
        for _ in range(3):
            started = time.perf_counter()
            network.predict_proba(fitted, X_test, p["predict.batch_size"]).argmax(axis=1)
            pred_times.append(time.perf_counter() - started)
        row("prediction, images/s", f"{len(X_test) / min(pred_times):,.0f}",
            f"{len(X_test)} test images in {min(pred_times):.3f} s (best of 3)")

        if not args.no_run:
            wall, peak, accuracy, failure = time_run(csvs[0], csvs[1], tmp, env)
            if failure:
                row("`python run.py`", "failed", failure.replace("\n", " / "))
                return 1
            shown = f"validation accuracy {100 * accuracy:.2f}%" if accuracy is not None else ""
            row("`python run.py`, wall", f"{wall:.1f} s", "default params.yaml; " + shown)
            row("`python run.py`, peak RSS", f"{peak / 2**20:.0f} MiB" if peak else "n/a",
                "VmHWM, read while it runs" if peak else "no /proc on this system")
    return 0


if __name__ == "__main__":
    sys.exit(main())
