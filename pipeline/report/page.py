"""The report's "Draw a digit" panel: a canvas, and the network running in the page.

The page prepares a drawing the way `predict-image` prepares an image file
(pipeline/images/prepare.py) and runs the forward pass of pipeline/nn/network.py, in
plain JavaScript (static/draw.js; no framework, nothing fetched). The panel's HTML
(templates/panel.html), its CSS (static/draw.css) and its script are inlined into
index.html, so the page works offline, opened from the file. The weights of the saved
model's first network travel inside the page as base64 of little-endian float32.
`window.digits.prepare` and `window.digits.classify` expose the two halves;
tests/report/test_page.py holds them to image.py and network.py in headless Chromium.
"""
from __future__ import annotations

import base64
import html
import json
from importlib import resources
from string import Template

import numpy as np

from pipeline.images import prepare as image
from pipeline.nn import network

CANVAS = 280            # drawing canvas, pixels a side: 10 per MNIST pixel
PEN = 18                # pen width on it: about MNIST's stroke once scaled to 20x20
CELL = 16               # screen pixels a side of each hidden unit's square
MEMBER = 0              # the ensemble member the page runs (the first, as weights_grid draws)


def asset(name: str) -> str:
    """The text of one of the report's files, by its path in pipeline/report
    ("templates/panel.html", "static/draw.js")."""
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


# Read once, at import, as pipeline/sources.py reads the files the step's record hashes.
# draw.js mirrors image.py and network.py step by step: a change to either needs the
# same change there (tests/report/test_page.py fails until it is made).
PANEL = Template(asset("templates/panel.html"))
STYLE = asset("static/draw.css")
SCRIPT = asset("static/draw.js")


def encode_weights(params: dict[str, np.ndarray]) -> dict:
    """One network's parameters as {"order": names, "shapes": {name: shape}, "data":
    base64 of little-endian float32 values}: the buffer of `network.pack`, which
    holds the arrays one after the other, row-major, in `order` (network.PACKED)."""
    flat, _ = network.pack(params)                                  # (P,) float32
    return {"order": list(network.PACKED),
            "shapes": {k: list(params[k].shape) for k in network.PARAM_NAMES},
            "data": base64.b64encode(flat.astype("<f4", copy=False).tobytes()).decode("ascii")}


def decode_weights(blob: dict) -> dict[str, np.ndarray]:
    """The inverse of `encode_weights`: {name: float32 array}, views of one buffer."""
    flat = np.frombuffer(base64.b64decode(blob["data"]), "<f4").astype(np.float32)
    return network.views(flat, {k: tuple(shape) for k, shape in blob["shapes"].items()})


def which_network(members: int, tta: bool = False) -> str:
    """A sentence saying which network of the saved model the page runs (and that
    it runs without test-time augmentation, when predict used it)."""
    if members == 1:
        said = "the network saved by train, whose weights are embedded in this page."
    else:
        said = (f"the first of the {members} networks of the saved ensemble (its weights "
                f"are embedded in this page), so its probabilities can differ a little from "
                f"the ensemble's, whose scores this report gives.")
    if tta:
        said += (" It sees the drawing once, without the moved copies of test-time "
                 "augmentation that predict averages.")
    return said


def panel(params: dict[str, np.ndarray], members: int = 1, tta: bool = False) -> str:
    """The panel's HTML: the canvas, the outputs, the weights of `params` (one
    network, W1 (784, H) ...) as JSON, and SCRIPT, filled into templates/panel.html.
    Its CSS is STYLE, for the page's <style>. `members`: the saved model's
    network count, and `tta`: whether predict used test-time augmentation, for the
    sentence saying what runs here."""
    model = {
        **encode_weights(params),
        # image.py's constants, so the page prepares drawings as predict-image does.
        "prepare": {"side": image.SIDE, "box": image.BOX, "centre": image.CENTRE,
                    "noise_floor": image.NOISE_FLOOR, "noise_sigmas": image.NOISE_SIGMAS,
                    "coarse": image.COARSE, "stroke": image.STROKE, "tail": image.TAIL},
    }
    bars = "".join(
        f'<div class="digit-bar"><span>{c}</span><span class="digit-track">'
        f'<span class="digit-fill" id="digit-fill-{c}"></span></span>'
        f'<span class="digit-p" id="digit-p-{c}"></span></div>'
        for c in range(params["b2"].shape[0]))
    units = params["b1"].shape[0]
    cols = int(np.ceil(np.sqrt(units)))                 # the layout of weights_grid's mosaic
    rows = -(-units // cols)
    return PANEL.substitute(
        which=html.escape(which_network(members, tta)), canvas=CANVAS, pen=PEN,
        side=image.SIDE, bars=bars, cols=cols, rows=rows, width=CELL * cols,
        height=CELL * rows, units=units, model=json.dumps(model), script=SCRIPT)

