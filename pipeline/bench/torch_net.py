"""The PyTorch contender: the same network and training step, in PyTorch."""
from __future__ import annotations

import contextlib
import time

import numpy as np


def import_torch(threads: int):
    """The torch module, set to use `threads` threads, or None when it is not installed."""
    with contextlib.suppress(ImportError):
        import torch
        torch.set_num_threads(threads)
        return torch
    return None


class TorchNet:
    """The same network, loss, optimizer and L2 as `fit.fit`, in PyTorch on the CPU,
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
        """Seconds for one epoch as `fit.fit` runs it: shuffled batches, the loss
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
