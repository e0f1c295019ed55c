"""The report's "Draw a digit" panel (pipeline/report/page.py and its script,
pipeline/report/static/draw.js), in headless Chromium: the page's preparation and
forward pass against image.py and network.py, strokes drawn with real pointer events,
and a page that loads cleanly.

The browser tests need Debian's `chromium` and `chromium-driver` packages and the
`selenium` library (requirements-dev.txt; `.ci/run` installs all three); without
them they skip. Run with `-s` to see the page's load time and the screenshot's path.
"""
import base64
import json
import math
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from helpers import SAMPLE, make_params
from PIL import Image, ImageDraw

from pipeline.engine import runner
from pipeline.images import prepare as image
from pipeline.nn import network
from pipeline.report import page
from pipeline.steps.graph import STEPS
from pipeline.training import ensemble as model

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
MAX_REPORT_BYTES = 8 * 1024 * 1024


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Every stage run on the bundled sample (4500 training rows, 5 epochs: about 93%
    validation accuracy), so the page's network reads drawn digits."""
    tmp = tmp_path_factory.mktemp("page")
    params = make_params(tmp, SAMPLE / "train.csv.gz", SAMPLE / "test.csv.gz", "train.epochs=5")
    runner.run(params, list(STEPS))
    outputs = tmp / "outputs"
    return outputs, model.load(outputs / "train" / "model.npz")


def embedded(html_text: str) -> dict:
    """The JSON the page carries in <script id="digits-model">."""
    found = re.search(r'<script type="application/json" id="digits-model">(.*?)</script>',
                      html_text, re.S)
    assert found, "no weights in the page"
    return json.loads(found.group(1))


def test_the_page_carries_the_first_network_exactly(built):
    outputs, nets = built
    carried = embedded((outputs / "report" / "index.html").read_text())
    weights = page.decode_weights(carried)
    for name in network.PARAM_NAMES:
        np.testing.assert_array_equal(weights[name], nets[0][name])
    # image.py's constants (NOISE_FLOOR, ...), so that the page cannot drift from them.
    assert carried["prepare"] == {k: getattr(image, k.upper()) for k in carried["prepare"]}


def test_the_page_says_which_network_of_an_ensemble_it_runs(rng):
    params = network.init_params(rng, n_hidden=16)
    assert "the network saved by train" in page.panel(params, members=1)
    assert "the first of the 5 networks" in page.panel(params, members=5)
    assert "without the moved copies" in page.panel(params, members=1, tta=True)
    assert "moved copies" not in page.panel(params, members=1)


def test_the_report_folder_stays_under_8_mb(built):
    outputs, _ = built
    size = sum(p.stat().st_size for p in (outputs / "report").iterdir())
    print(f"\nreport folder: {size / 1e6:.2f} MB")
    assert size < MAX_REPORT_BYTES


# ---- In the browser.

def _missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        return f"no Chromium ({CHROMIUM}, {CHROMEDRIVER}): apt-get install chromium chromium-driver"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "no selenium: pip install -r requirements-dev.txt"
    return None


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium through chromedriver, both Debian's: nothing is downloaded."""
    reason = _missing()
    if reason and os.environ.get("REQUIRE_BROWSER"):
        pytest.fail(f"REQUIRE_BROWSER is set, but {reason}")     # CI: the page must be tested
    if reason:
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1200,1000",
                 f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def report_page(browser, built):
    """The report opened from its file, as by a double click."""
    outputs, _ = built
    browser.get((outputs / "report" / "index.html").as_uri())
    return browser


def test_the_page_loads_without_console_errors(report_page):
    messages = report_page.get_log("browser")
    assert [m for m in messages if m["level"] in ("SEVERE", "WARNING")] == []
    assert report_page.execute_script(
        "return typeof window.digits.prepare + typeof window.digits.classify") == \
        "functionfunction"
    loaded = report_page.execute_script(
        "return performance.getEntriesByType('navigation')[0].loadEventEnd")
    print(f"\npage load: {loaded:.0f} ms from navigation start to the load event")


def test_the_pages_probabilities_are_network_forwards(report_page, built):
    outputs, nets = built
    X = np.load(outputs / "preprocess" / "val_x.npy")[:200]               # (200, 784)
    got = np.array(report_page.execute_script(
        "return arguments[0].map(x => window.digits.classify(x))", X.tolist()))
    want, _ = network.forward(nets[0], X.copy())
    assert got.shape == (200, 10)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def drawing(size, lines, width, inks=((0, 0, 0),), paper=(255, 255, 255)) -> Image.Image:
    """An RGBA image of polylines, as a canvas holds a drawing; line i in inks[i]
    (the last ink for the lines after them)."""
    img = Image.new("RGBA", size, paper + (255,))
    pen = ImageDraw.Draw(img)
    for i, line in enumerate(lines):
        pen.line(line, fill=inks[min(i, len(inks) - 1)] + (255,), width=width, joint="curve")
    return img


def page_prepare(driver, img: Image.Image):
    """window.digits.prepare on `img` passed in as a canvas ImageData; None if no ink."""
    rgba = base64.b64encode(np.asarray(img.convert("RGBA")).tobytes()).decode("ascii")
    got = driver.execute_script("""
        const bytes = Uint8ClampedArray.from(atob(arguments[0]), c => c.charCodeAt(0));
        const pixels = window.digits.prepare(new ImageData(bytes, arguments[1], arguments[2]));
        return pixels && Array.from(pixels);""", rgba, img.width, img.height)
    return None if got is None else np.array(got, np.float32)


def photographed(img: Image.Image, seed: int = 0) -> Image.Image:
    """`img` with light falling from 55% on the left to 100% on the right, and noise."""
    rgba = np.asarray(img, np.float32).copy()
    light = np.linspace(0.55, 1.0, img.width)[None, :, None]
    noise = np.random.default_rng(seed).normal(0, 8, rgba[..., :3].shape)
    rgba[..., :3] = np.clip(rgba[..., :3] * light + noise, 0, 255)
    return Image.fromarray(rgba.astype(np.uint8))


# Each exercises a branch of image.py: the page's own canvas and pen; a thin pen (the
# stroke widening); a big image (the shrink before widening, the ink box on a coarser
# copy); light ink on a dark ground (the inversion); a small drawing in two colours
# (grey levels; scaled up); a photo (the paper's brightness and noise floor).
DRAWINGS = {
    "seven on the page's canvas": lambda: drawing(
        (280, 280), [[(70, 60), (210, 60), (120, 230)]], 18),
    "four, thin pen": lambda: drawing(
        (400, 400), [[(250, 340), (250, 60), (90, 260), (300, 260)]], 3),
    "two, big": lambda: drawing(
        (900, 700), [[(300, 150), (450, 80), (600, 200), (300, 600), (650, 600)]], 30),
    "one, light on dark": lambda: drawing(
        (300, 200), [[(150, 30), (150, 170)], [(110, 70), (150, 30)]], 12,
        inks=((250, 250, 250),), paper=(20, 20, 20)),
    "small, red and blue": lambda: drawing(
        (60, 60), [[(20, 10), (40, 30)], [(40, 30), (20, 50)]], 4,
        inks=((200, 30, 30), (30, 30, 200))),
    "seven, photographed": lambda: photographed(drawing(
        (320, 240), [[(100, 40), (220, 40), (150, 200)]], 10, inks=((40, 40, 90),),
        paper=(235, 225, 200))),
}


@pytest.mark.parametrize("name", DRAWINGS)
def test_the_page_prepares_a_drawing_as_image_py_does(report_page, tmp_path, name):
    img = DRAWINGS[name]()
    img.save(tmp_path / "drawing.png")
    want = image.prepare(image.read_grey(tmp_path / "drawing.png"))
    got = page_prepare(report_page, img)
    assert got is not None and got.shape == (784,)
    levels = np.abs(np.round(got * 255) - np.round(want * 255))         # grey levels, 0-255
    assert levels.mean() <= 1.0, f"{name}: {levels.mean():.2f} grey levels apart on average"
    # Both round the same float32 values; only a last-bit difference in sin() could
    # put a pixel one level apart.
    assert levels.max() <= 1.0


def test_a_blank_canvas_has_no_digit(report_page):
    assert page_prepare(report_page, Image.new("RGBA", (50, 40), (255, 255, 255, 255))) is None


def _ellipse(cx, cy, rx, ry, n=24):
    return [(cx + rx * math.sin(2 * math.pi * i / n), cy - ry * math.cos(2 * math.pi * i / n))
            for i in range(n + 1)]


# Strokes in canvas pixels (280x280), and the pointer that draws them.
STROKES = {
    1: ("mouse", [[(150, 45), (146, 90), (142, 140), (138, 190), (135, 235)]]),
    7: ("pen", [[(80, 55), (140, 55), (205, 55), (170, 120), (140, 180), (120, 235)]]),
    0: ("touch", [_ellipse(140, 140, 55, 90)]),
}


def draw(driver, canvas, strokes, kind: str) -> None:
    """Press, move through each stroke's points and release, as W3C pointer actions
    of the given kind (mouse, pen or touch) on the canvas."""
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.actions.pointer_input import PointerInput

    actions = ActionBuilder(driver, mouse=PointerInput(kind, kind), duration=0)
    half = canvas.size["width"] / 2                 # offsets count from the element's centre
    for stroke in strokes:
        (x, y), rest = stroke[0], stroke[1:]
        actions.pointer_action.move_to(canvas, x - half, y - half).pointer_down()
        for x, y in rest:
            actions.pointer_action.move_to(canvas, x - half, y - half)
        actions.pointer_action.pointer_up()
    actions.perform()


def after_a_frame(driver) -> None:
    """Wait until the page has drawn its next frame (it updates once a frame)."""
    driver.execute_async_script(
        "const done = arguments[0]; requestAnimationFrame(() => requestAnimationFrame(done));")


@pytest.mark.parametrize("digit", STROKES)
def test_strokes_drawn_with_a_pointer_are_read_as_that_digit(report_page, built, tmp_path,
                                                             digit):
    _, nets = built
    kind, strokes = STROKES[digit]
    canvas = report_page.find_element("id", "digit-canvas")
    report_page.execute_script("arguments[0].scrollIntoView({block: 'center'})", canvas)
    report_page.find_element("id", "digit-clear").click()
    after_a_frame(report_page)
    assert report_page.find_element("id", "digit-top").text == "\u2013"   # nothing drawn
    draw(report_page, canvas, strokes, kind)
    after_a_frame(report_page)
    shown = report_page.find_element("id", "digit-top").text
    bars = [report_page.find_element("id", f"digit-p-{c}").text for c in range(10)]
    assert shown == str(digit), f"drew a {digit} ({kind}), the page says {shown}: {bars}"
    # What was drawn, through image.py and network.py, reads the same.
    png = report_page.execute_script("return arguments[0].toDataURL('image/png')", canvas)
    (tmp_path / "canvas.png").write_bytes(base64.b64decode(png.split(",", 1)[1]))
    x = image.prepare(image.read_grey(tmp_path / "canvas.png"))
    probs, _ = network.forward(nets[0], x[None].copy())
    assert probs.argmax() == digit
    assert f"{100 * probs[0, digit]:.1f}%" == bars[digit]


def test_a_screenshot_of_the_panel(report_page, tmp_path_factory):
    """The panel after the last stroke test, for a person to look at (path printed)."""
    panel = report_page.find_element("id", "draw-a-digit")
    report_page.execute_script("arguments[0].scrollIntoView({block: 'start'})", panel)
    path = tmp_path_factory.mktemp("screenshot") / "panel.png"
    assert panel.screenshot(str(path))
    with Image.open(path) as shot:
        grey = np.asarray(shot.convert("L"))
    assert shot.width >= 500 and (grey < 80).mean() > 0.01            # ink, bars, a digit
    print(f"\npanel screenshot: {path}")
