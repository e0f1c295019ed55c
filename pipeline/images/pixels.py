"""Pixels as the network reads them: the one scaling from 0-255 to [0, 1], shared by
the preprocess stage and the preparation of the user's own images (no Pillow here)."""
from __future__ import annotations

import numpy as np


def scale(images: np.ndarray) -> np.ndarray:
    """uint8 images (N, 784) -> float32 (N, 784) in [0, 1]."""
    return images.astype(np.float32) * np.float32(1.0 / 255.0)
