"""Photos of a page, made from MNIST digits as people take them: on a desk, framed, in
dim light, with specks, under a shadow, or as white ink on a transparent PNG. The tests
of pipeline/images and the measurement in docs/accuracy.md make them the same way."""
from __future__ import annotations

import numpy as np
from PIL import Image

SIZE = 240             # pixels a side of the page


def page(digit: np.ndarray, rng: np.random.Generator, paper: float = 0.9,
         ink: float = 0.12, light: float = 0.7) -> np.ndarray:
    """An MNIST digit (28, 28) uint8 written on a page (SIZE, SIZE) of grey levels in
    [0, 1]: paper `paper` bright, ink `ink`, light falling to `light` of full on one
    side, sensor noise."""
    big = np.asarray(Image.fromarray(digit).resize((SIZE, SIZE), Image.Resampling.BICUBIC),
                     np.float32) / 255                                   # (SIZE, SIZE)
    grey = paper * (1 - big) + ink * big
    fall = np.linspace(light, 1.0, SIZE)
    grey = grey * (fall[None, :] if rng.random() < 0.5 else fall[::-1, None])
    return np.clip(grey + rng.normal(0, 0.02, grey.shape), 0, 1)


def on_desk(grey: np.ndarray, width: int, shade: float, rng: np.random.Generator) -> np.ndarray:
    """The page on a desk of `shade` showing `width` pixels around it, a little more on
    one side, with the desk's grain."""
    extra = int(rng.integers(0, width // 2 + 1))
    out = np.pad(grey, ((width, width + extra), (width + extra, width)), constant_values=shade)
    grain = rng.normal(0, 0.03, out.shape)
    desk = np.ones_like(out, bool)
    desk[width:width + grey.shape[0], width + extra:width + extra + grey.shape[1]] = False
    return np.clip(np.where(desk, out + grain, out), 0, 1)


def framed(grey: np.ndarray, width: int) -> np.ndarray:
    """The page with a black frame `width` pixels wide, as some scans have."""
    return np.pad(grey, width, constant_values=0.0)


def speckled(grey: np.ndarray, rng: np.random.Generator, n: int = 3, size: int = 6,
             ink: float = 0.12) -> np.ndarray:
    """The page with `n` specks of `size` pixels near its corners, off the digit."""
    out = grey.copy()
    h, w = out.shape
    for _ in range(n):
        r = int(rng.choice([rng.integers(2, 20), rng.integers(h - 20 - size, h - 2 - size)]))
        c = int(rng.choice([rng.integers(2, 20), rng.integers(w - 20 - size, w - 2 - size)]))
        out[r:r + size, c:c + size] = ink
    return out


def shadowed(grey: np.ndarray, rng: np.random.Generator, depth: float = 0.45) -> np.ndarray:
    """The page under a soft shadow (a hand, a phone) darkening one corner to `depth`."""
    h, w = grey.shape
    rows, cols = np.indices((h, w)) / max(h, w)
    if rng.random() < 0.5:
        cols = cols[:, ::-1]
    reach = np.clip((1.1 - rows - cols) / 0.4, 0, 1)                    # 1 in the corner
    return grey * (1 - (1 - depth) * reach)


def transparent(digit: np.ndarray, colour=(255, 255, 255)) -> Image.Image:
    """An MNIST digit as strokes of `colour` on a transparent PNG: the digit in the alpha
    channel, the colour the same everywhere (white ink, as on a dark app theme)."""
    alpha = Image.fromarray(digit).resize((SIZE, SIZE), Image.Resampling.BICUBIC)
    rgba = np.zeros((SIZE, SIZE, 4), np.uint8)
    rgba[..., :3] = colour
    rgba[..., 3] = np.asarray(alpha)
    return Image.fromarray(rgba, "RGBA")


def kinds(digit: np.ndarray, i: int, rng: np.random.Generator) -> dict[str, Image.Image]:
    """The `i`-th photo of each kind made from `digit`: desk widths and shades, frame
    widths and paper brightness go round their values as i goes up."""
    to_image = lambda g: Image.fromarray(np.round(g * 255).astype(np.uint8))
    widths, shades = (8, 20, 40, 70), (0.08, 0.3, 0.5)
    return {
        "desk": to_image(on_desk(page(digit, rng), widths[i % 4], shades[i % 3], rng)),
        "frame": to_image(framed(page(digit, rng), 1 + i % 3)),
        "dim": to_image(page(digit, rng, paper=0.30 + 0.15 * (i % 4) / 3, ink=0.04, light=0.8)),
        "specks": to_image(speckled(page(digit, rng), rng)),
        "shadow": to_image(on_desk(shadowed(page(digit, rng, light=1.0), rng), 20, 0.2, rng)),
        "transparent": transparent(digit),
    }


def blanks(rng: np.random.Generator) -> dict[str, Image.Image]:
    """Pages with no digit: blank, one speck, a tiny dot, and a speck on a desk."""
    to_image = lambda g: Image.fromarray(np.round(g * 255).astype(np.uint8))
    empty = lambda: page(np.zeros((28, 28), np.uint8), rng)
    one = speckled(empty(), rng, n=1, size=7)
    dot = empty()
    dot[120:123, 100:103] = 0.1
    return {"blank": to_image(empty()), "speck": to_image(one), "dot": to_image(dot),
            "speck on a desk": to_image(on_desk(speckled(empty(), rng, n=1, size=7), 30, 0.2, rng))}
