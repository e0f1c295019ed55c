"""The benchmark's output: one Markdown table row per figure."""
from __future__ import annotations

import numpy as np

from pipeline.nn import network, optim


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


def subnormals(params: dict) -> str:
    """"W1 0, b1 0, W2 0, b2 0": how many values of each parameter are subnormal."""
    return ", ".join(f"{k} {optim.count_subnormal(params[k])}" for k in network.PARAM_NAMES)


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
