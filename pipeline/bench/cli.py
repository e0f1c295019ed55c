"""The benchmark's command line, `python -m pipeline.bench`: its options, and the
order in which the figures are measured."""
from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

import numpy as np

from pipeline import bench
from pipeline.bench import ROOT
from pipeline.bench.data import choose_csvs, load_arrays
from pipeline.bench.distortions import distorted, time_augmented, time_drift
from pipeline.bench.epochs import (
    epoch_gflop,
    profile_epoch,
    time_prediction,
    time_training,
)
from pipeline.bench.machine import limit_threads, machine
from pipeline.bench.members import time_members
from pipeline.bench.table import report_training, row
from pipeline.bench.torch_net import import_torch
from pipeline.bench.whole_run import report_run
from pipeline.config import params as params_mod
from pipeline.config.sections import Train
from pipeline.errors import PipelineError
from pipeline.training import fit
from pipeline.training.threads import cores


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The benchmark's options."""
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.bench", description=bench.__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, metavar="FOLDER",
                        help="folder with train.csv and test.csv, plain, .gz or in "
                             "digit-recognizer.zip (default: the files of params.yaml's "
                             "data.train and data.test, as `python run.py` reads them; "
                             "generated data when they are absent)")
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


def measure_training(X: np.ndarray, y: np.ndarray, X_val: np.ndarray, y_val: np.ndarray,
                     p: dict, args: argparse.Namespace, torch, workdir: Path) -> dict:
    """Time and print the training figures on X (N, 784), y (N,) and the validation
    rows, with the params `p`: the epochs against matmul-only and PyTorch, the
    distortions, the ensemble members, the drift and, with --profile, where an epoch
    goes. Returns the weights fitted by the timed epochs."""
    default = Train.of(p)
    hp = default.plain()                # the work PyTorch does too
    best = Train.of(params_mod.load(ROOT / "params-best.yaml"))
    # Shifts alone are made in line while BLAS has every core (feed.per_batch);
    # params.yaml also rotates.
    likes = {"shifts (params.yaml's)": dataclasses.replace(
                 hp, augment_shift=default.augment_shift),
             "distortions (params.yaml)": default,
             "distortions (params-best.yaml)": best}
    distortions = {name: fit.augmenter(like, 28) for name, like in likes.items()}
    fitted, times, contenders = time_training(X, y, X_val, y_val, hp, args.repeats, torch,
                                              distortions)
    report_training(times, epoch_gflop(len(X), len(X_val), X.shape[1], hp.hidden),
                    (len(X), len(X_val)), hp.batch_size, args.threads, torch, fitted,
                    contenders)
    time_augmented(X, y, X_val, y_val, hp, likes, {k: times[k] for k in distortions},
                   max(2, args.repeats // 2))
    time_members(X, y, X_val, y_val, best, workdir)
    if args.drift_epochs:
        time_drift(X, y, X_val, y_val, distorted(hp, best), args.drift_epochs)
    if torch is None and not args.no_torch:
        row("PyTorch comparison", "skipped",
            "not installed: pip install -r requirements-bench.txt")
    if args.profile:
        profile_epoch(X, y, X_val, y_val, hp)
    return fitted


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print one table row per figure."""
    args = parse_args(argv)
    torch = None if args.no_torch else import_torch(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp, limit_threads(args.threads):
        tmp = Path(tmp)
        try:
            # The figures are of the default params; params.local.yaml only says
            # where the data is.
            p = params_mod.load(ROOT / "params.yaml")
            csvs, source = choose_csvs(args.data, args.generate, tmp)
        except PipelineError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"machine: {machine(args.threads, torch)}")
        print(f"data: {source}")
        print("| figure | value | detail |\n|---|---|---|", flush=True)

        X, y, X_val, y_val, X_test = load_arrays(*csvs, p)
        fitted = measure_training(X, y, X_val, y_val, p, args, torch, tmp)
        time_prediction(fitted, X_test, p["predict.batch_size"])
        if not args.no_run:
            return report_run(csvs[0], csvs[1], tmp, args.threads)
    return 0
