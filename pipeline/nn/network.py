"""The network: 784 inputs -> H ReLU units -> 10-way softmax. NumPy only, no I/O.

Rows are samples (scikit-learn's convention): a batch X has shape (N, 784).
Parameters, all float32, in a dict:
    W1 (784, H)   b1 (H,)   W2 (H, 10)   b2 (10,)
The loss is the mean cross-entropy plus (l2 / 2) * (sum W1**2 + sum W2**2); the
biases are not penalised.
"""
from __future__ import annotations

import numpy as np

PARAM_NAMES = ("W1", "b1", "W2", "b2")
PACKED = ("W1", "W2", "b1", "b2")   # `pack`'s order: the penalised weights first


def init_params(rng: np.random.Generator, n_in: int = 784, n_hidden: int = 256,
                n_out: int = 10) -> dict[str, np.ndarray]:
    """He initialisation: weights ~ N(0, 2 / fan_in), which keeps the variance of
    ReLU activations steady from layer to layer; biases start at zero."""
    def he(fan_in, fan_out):
        return (rng.standard_normal((fan_in, fan_out)) * np.sqrt(2.0 / fan_in)).astype(np.float32)

    return {
        "W1": he(n_in, n_hidden),
        "b1": np.zeros(n_hidden, np.float32),
        "W2": he(n_hidden, n_out),
        "b2": np.zeros(n_out, np.float32),
    }


def pack(params: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Copy `params` into one contiguous float32 buffer (P,), in PACKED order: W1 and
    W2 make its first `penalised(params)` values, the ones the L2 term covers.

    Returns (buffer, views): `views` has the keys and shapes of `params` and shares
    the buffer's memory, so an update of the buffer updates every parameter, with
    one NumPy call per operation instead of one per array.
    """
    flat = np.concatenate([params[k].ravel() for k in PACKED]).astype(np.float32)
    return flat, views(flat, {k: v.shape for k, v in params.items()})


def penalised(params: dict[str, np.ndarray]) -> int:
    """How many values the L2 penalty covers: those of W1 and W2."""
    return params["W1"].size + params["W2"].size


def shapes(n_in: int = 784, n_hidden: int = 256, n_out: int = 10) -> dict[str, tuple]:
    """The parameters' shapes: W1 (784, H), b1 (H,), W2 (H, 10), b2 (10,)."""
    return {"W1": (n_in, n_hidden), "b1": (n_hidden,), "W2": (n_hidden, n_out), "b2": (n_out,)}


def views(flat: np.ndarray, shape: dict[str, tuple]) -> dict[str, np.ndarray]:
    """Views into a buffer that `pack` made (or a copy of one), with these shapes."""
    out, start = {}, 0
    for k in PACKED:
        size = int(np.prod(shape[k]))
        out[k] = flat[start:start + size].reshape(shape[k])
        start += size
    return out


def softmax_(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax of logits z (N, C), computed in place and returned."""
    z -= z.max(axis=1, keepdims=True)   # exp never overflows; the result is unchanged
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def forward(params: dict, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (probs (N, 10), hidden activations h (N, H)) for a batch X (N, 784)."""
    h = X @ params["W1"]            # (N, H)
    h += params["b1"]
    np.maximum(h, 0, out=h)         # ReLU
    z = h @ params["W2"]            # (N, 10) logits
    z += params["b2"]
    return softmax_(z), h


def cross_entropy(probs: np.ndarray, y: np.ndarray) -> float:
    """Mean -log p(true class) over the batch; y holds integer labels (N,)."""
    p_true = probs[np.arange(len(y)), y]
    # A probability that rounded to 0 would give inf; the floor caps one sample's loss.
    return float(-np.log(np.maximum(p_true, 1e-30)).mean())


def l2_penalty(params: dict, l2: float) -> float:
    """(l2 / 2) * (sum W1**2 + sum W2**2)."""
    return 0.5 * l2 * float(np.vdot(params["W1"], params["W1"]) + np.vdot(params["W2"], params["W2"]))


def soften(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(z / T) (N, C) from probs = softmax(z): it is proportional to
    probs ** (1 / T). A new array."""
    soft = np.power(probs, np.float32(1.0 / temperature))
    soft /= soft.sum(axis=1, keepdims=True)
    return soft


def loss(params: dict, X: np.ndarray, y: np.ndarray, l2: float,
         targets: np.ndarray | None = None, temperature: float = 1.0,
         weight: float = 0.0) -> float:
    """The training objective on a batch: mean cross-entropy + L2 penalty. With
    soft `targets` (N, 10), distillation (Hinton, Vinyals and Dean, 2015): the
    cross-entropy with the labels weighs 1 - weight, and that of the softened
    outputs softmax(z / T) with the targets weighs weight * T**2."""
    probs, _ = forward(params, X)
    hard = cross_entropy(probs, y)
    if targets is None:
        return hard + l2_penalty(params, l2)
    # A probability that rounded to 0 would give 0 * -inf = NaN; the floor avoids it.
    softened = np.maximum(soften(probs, temperature), np.finfo(probs.dtype).tiny)
    soft = -float((targets * np.log(softened)).sum(axis=1).mean())
    return (1 - weight) * hard + weight * temperature ** 2 * soft + l2_penalty(params, l2)


def backward(params: dict, X: np.ndarray, h: np.ndarray, probs: np.ndarray, y: np.ndarray,
             l2: float, grads: dict | None = None, targets: np.ndarray | None = None,
             temperature: float = 1.0, weight: float = 0.0) -> dict[str, np.ndarray]:
    """Gradients of `loss` with respect to each parameter, for the batch that
    `forward` turned into (probs, h), and the same distillation options. `probs`
    is overwritten. Pass last step's `grads` to reuse its buffers. l2 = 0 skips the
    penalty's term, for an optimizer that adds it itself (optim.RMSprop's l2)."""
    if grads is None:
        grads = {k: np.empty_like(v) for k, v in params.items()}
    n = len(y)
    soft = None
    if targets is not None:
        # The softened term's gradient with respect to the logits is
        # T**2 * (softmax(z / T) - targets) / T; the T**2 keeps it as strong as the
        # labels' term whatever the temperature.
        soft = soften(probs, temperature)
        soft -= targets
        soft *= np.float32(weight * temperature)
    # Softmax followed by cross-entropy has the gradient probs - onehot(y) with
    # respect to the logits: the exp in softmax cancels the log in the loss.
    dz = probs                                     # (N, 10)
    dz[np.arange(n), y] -= 1.0
    if soft is not None:
        dz *= np.float32(1 - weight)
        dz += soft
    dz *= np.float32(1.0 / n)                      # the loss is a mean over the batch
    np.matmul(h.T, dz, out=grads["W2"])            # (H, 10)
    if l2:
        grads["W2"] += l2 * params["W2"]
    np.sum(dz, axis=0, out=grads["b2"])
    dh = dz @ params["W2"].T                       # (N, H)
    dh *= h > 0                                    # ReLU passes gradient where it was active
    np.matmul(X.T, dh, out=grads["W1"])            # (784, H); no gradient for X is needed
    if l2:
        grads["W1"] += l2 * params["W1"]
    np.sum(dh, axis=0, out=grads["b1"])
    return grads


def predict_proba(params: dict, X: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """Class probabilities (N, 10) for images X (N, 784), a batch at a time."""
    out = np.empty((len(X), params["b2"].shape[0]), np.float32)
    for start in range(0, len(X), batch_size):
        out[start:start + batch_size], _ = forward(params, X[start:start + batch_size])
    return out
