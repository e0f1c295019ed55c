"""The speed benchmark: `python -m pipeline.bench` (`--help` for options).

Measures, on the data the pipeline reads (params.yaml's data.train and data.test, or
`--data FOLDER`), else on generated CSVs of Kaggle's shape, and prints one Markdown
table row per figure:
  - ingest: seconds to parse train.csv and test.csv, checks included;
  - training: seconds per epoch of `fit.fit` at the default batch size, the GFLOP/s
    that achieves, and the same for a plain float32 matmul-only epoch of the same
    shapes (the floor everything else is measured against);
  - prediction: images per second;
  - the subnormal floats left in each parameter after those epochs (slow on some
    CPUs: docs/speed.md, Subnormal floats);
  - the same network, batch size, RMSprop, L2 and float32 in PyTorch on the CPU,
    when it is installed (`pip install -r requirements-bench.txt`), side by side, in
    its default mode and with flush-denormal on (its best on Intel), and the
    matmul-only epoch against it: the best ratio any training epoch could reach;
  - augmentation: what shifts alone, params.yaml's and params-best.yaml's distortions add
    to a `fit.fit` epoch, which makes them ahead on a second thread (and what they
    cost on one core alone), and the first and last epochs of a long distorted run
    (drift);
  - the whole default `python run.py`: wall seconds and peak resident memory.

The NumPy epochs are those of one `fit.fit` run; after each, a matmul-only epoch
and a PyTorch epoch run, so that load from other programs hits all three alike and
the ratios come from one run. The first round warms up and is not counted; the
best of the other rounds is reported (other programs only ever add time), with the
median, the worst and the range of the per-round ratios to show the noise.
A benchmark, not a test: nothing here asserts a time.
"""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]     # the project: run.py, params.yaml
