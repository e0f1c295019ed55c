"""predict-image: MNIST-style preparation of the user's own images, and the command."""
import re

import numpy as np
import photos
import pytest
from helpers import make_params, run_cli, sample_rows
from PIL import Image, ImageFilter

from pipeline import artifacts
from pipeline.commands import predict_image
from pipeline.errors import PipelineError
from pipeline.images import prepare as image
from pipeline.nn import network
from pipeline.training import ensemble as model


def sample_digits(n):
    """(images (n, 28, 28) uint8, labels (n,)) from the bundled sample."""
    rows = np.array([[int(v) for v in line.split(",")]
                     for line in sample_rows("train.csv.gz", n)[1:]])
    return rows[:, 1:].reshape(-1, 28, 28).astype(np.uint8), rows[:, 0]


def render(digit, path, scale=1, invert=False, pad=(0, 0, 0, 0), mode="L", thin=0):
    """Write an MNIST digit as an image file: enlarged, inverted to dark ink on
    light paper, with a margin (top, bottom, left, right) or thinned strokes."""
    img = Image.fromarray(digit).resize((28 * scale, 28 * scale), Image.Resampling.BICUBIC)
    if thin:
        img = img.point(lambda v: 255 if v > 128 else 0).filter(ImageFilter.MinFilter(thin))
    a = np.asarray(img)
    a = np.pad(a, ((pad[0], pad[1]), (pad[2], pad[3])))
    if invert:
        a = 255 - a
    Image.fromarray(a).convert(mode).save(path)
    return path


def correlation(a, b):
    """Correlation of two 28x28 images at the best shift of at most one pixel: centring
    to the nearest pixel may round a centre of mass the other way than MNIST did."""
    a, b = a.reshape(28, 28), b.reshape(28, 28)
    return max(float(np.corrcoef(np.roll(a, (dr, dc), (0, 1)).ravel(), b.ravel())[0, 1])
               for dr in (-1, 0, 1) for dc in (-1, 0, 1))


def test_prepare_reproduces_mnist_digits_from_any_size_and_polarity(tmp_path):
    digits, _ = sample_digits(20)
    similar = []
    for i, digit in enumerate(digits):
        original = digit.reshape(-1) / 255.0
        cases = [render(digit, tmp_path / f"{i}.png"),
                 render(digit, tmp_path / f"{i}-big.png", scale=5, invert=True,
                        pad=(40, 10, 90, 5), mode="RGB"),
                 render(digit, tmp_path / f"{i}.jpg", scale=3, invert=True, mode="RGB")]
        for path in cases:
            x = image.prepare(image.read_grey(path), str(path))
            assert x.shape == (784,) and x.dtype == np.float32
            similar.append(correlation(x, original))
            # Thin originals come back widened to MNIST's median stroke: close, not equal.
            assert similar[-1] > 0.75, path
        assert similar[-3] > 0.98                               # the 28x28 PNG as it was
    assert np.mean(similar) > 0.93


def test_centre_of_mass_lands_mid_field_and_the_digit_fits_20x20(rng):
    strokes = np.zeros((300, 120))
    strokes[20:280, 30:110] = 1.0                             # a tall block, off-centre
    digit = image.fit_box(strokes)
    assert digit.shape == (20, 6)                             # 260 x 80 becomes 20 x 6
    field = image.centre_by_mass(digit)
    rows, cols = np.indices(field.shape)
    r, c = (rows * field).sum() / field.sum(), (cols * field).sum() / field.sum()
    assert abs(r - 14) <= 0.5 and abs(c - 14) <= 0.5


def test_thin_strokes_are_thickened_to_mnist_width(tmp_path, monkeypatch):
    digits, _ = sample_digits(10)
    greys = [image.read_grey(render(d, tmp_path / f"{i}.png", scale=10, invert=True, thin=9))
             for i, d in enumerate(digits)]
    thick = [image.prepare(g).reshape(28, 28) for g in greys]
    monkeypatch.setattr(image, "STROKE", 0.0)                 # no thickening
    thin = [image.prepare(g).reshape(28, 28) for g in greys]
    assert all(1.5 < image.stroke_width(x) < 3.0 for x in thick)
    assert np.median([image.stroke_width(x) for x in thin]) < 1.2
    similar = lambda xs: np.mean([correlation(x, d / 255.0) for x, d in zip(xs, digits)])
    assert similar(thick) > similar(thin) + 0.03 and similar(thick) > 0.9


def test_transparent_png_reads_as_ink_on_white(tmp_path):
    rgba = np.zeros((60, 60, 4), np.uint8)                   # transparent black everywhere
    rgba[10:50, 28:33] = (0, 0, 0, 255)                      # an opaque black stroke
    Image.fromarray(rgba, "RGBA").save(tmp_path / "one.png")
    grey = image.read_grey(tmp_path / "one.png")
    assert grey[0, 0] == 1.0 and grey[30, 30] == 0.0
    x = image.prepare(grey).reshape(28, 28)
    assert x[14, 14] > 0.9 and x[0, 0] == 0


@pytest.mark.parametrize("content, message", [
    (b"not an image at all", r"bad\.png: cannot read as an image \(expected PNG or JPEG"),
    (None, r"missing\.png: file not found"),
])
def test_unreadable_files_are_named(tmp_path, content, message):
    path = tmp_path / ("bad.png" if content else "missing.png")
    if content:
        path.write_bytes(content)
    with pytest.raises(PipelineError, match=message):
        image.read_grey(path)


def test_an_image_too_large_to_read_safely_is_refused(tmp_path, monkeypatch):
    Image.new("L", (60, 60), 0).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)    # 3600 > 2 x 1000: a "bomb"
    with pytest.raises(PipelineError, match=r"big\.png: expected an image of at most 2,000 pixels"):
        image.read_grey(tmp_path / "big.png")


def test_a_blank_image_has_no_digit(tmp_path):
    Image.new("L", (50, 40), 200).save(tmp_path / "blank.png")
    with pytest.raises(PipelineError, match=r"blank\.png: found no digit"):
        image.prepare(image.read_grey(tmp_path / "blank.png"), str(tmp_path / "blank.png"))


def test_a_bad_file_does_not_hold_back_the_others(tmp_path, rng):
    nets = [network.init_params(rng)]
    saved = tmp_path / "model.npz"
    artifacts.save_arrays(saved, **{k: np.stack([n[k] for n in nets]) for k in network.PARAM_NAMES})
    digits, _ = sample_digits(2)
    good = [render(d, tmp_path / f"d{i}.png") for i, d in enumerate(digits)]
    Image.new("L", (50, 40), 200).save(tmp_path / "blank.png")
    results = predict_image.classify(saved, [good[0], tmp_path / "blank.png", tmp_path / "gone.png",
                                     good[1]])
    assert isinstance(results[1], PipelineError) and "blank.png: found no digit" in str(results[1])
    assert isinstance(results[2], PipelineError) and "gone.png: file not found" in str(results[2])
    alone = predict_image.classify(saved, good)              # the same answers without the bad two
    assert [results[0], results[3]] == alone and len(alone[0]) == 3
    (tmp_path / "out" / "train").mkdir(parents=True)
    saved.rename(tmp_path / "out" / "train" / "model.npz")
    done = run_cli(f"--set=outputs={tmp_path / 'out'}", "--set=data.sample=null",
                   "predict-image", str(good[0]), str(tmp_path / "blank.png"))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"model: {tmp_path / 'out' / 'train' / 'model.npz'} (1 network)"
    # An untrained network spreads its bets: below 80% the answer is marked.
    assert lines[1].startswith(f"{good[0]}: ") and lines[1].endswith("  unsure")
    assert len(lines) == 2
    assert done.stderr.splitlines() == [f"error: {tmp_path / 'blank.png'}: found no digit "
                                        "(the image is one flat shade)"]


def test_predict_image_command_agrees_with_the_model_on_the_original(tmp_path, tiny_csvs):
    params = make_params(tmp_path, *tiny_csvs)
    sets = [f"--set=data.train={params['data.train']}", f"--set=data.test={params['data.test']}",
            "--set=data.sample=null", f"--set=outputs={params['outputs']}",
            "--set=train.epochs=8"]
    done = run_cli(*sets, "ingest", "preprocess", "train")
    assert done.returncode == 0, done.stderr
    nets = model.members(artifacts.load_arrays(tmp_path / "outputs" / "train" / "model.npz"))
    digits, labels = sample_digits(60)
    probs = model.ensemble_proba(nets, digits.reshape(60, -1) / np.float32(255), 4096)
    # Digits the model is sure of, so that a faithful preparation keeps the answer.
    sure = np.argsort(-probs.max(axis=1))[:4]
    paths = [render(digits[i], tmp_path / f"d{i}.png", scale=4, invert=True, pad=(9, 30, 0, 17))
             for i in sure[:2]]
    paths += [render(digits[i], tmp_path / f"d{i}.jpg", scale=2, mode="RGB") for i in sure[2:]]
    done = run_cli(*sets, "predict-image", "--show", *map(str, paths))
    assert done.returncode == 0, done.stderr
    model_line, *lines, shown = done.stdout.splitlines()
    assert re.fullmatch(r"model: .+model\.npz \(1 network, validation accuracy [\d.]+%\)",
                        model_line)
    assert len(lines) == 4
    for i, path, line in zip(sure, paths, lines):
        match = re.fullmatch(re.escape(str(path)) + r": (\d) \(([\d.]+)%\)  (\d) \(([\d.]+)%\)"
                             r"  (\d) \(([\d.]+)%\)(  unsure)?", line)
        assert match, line
        classes = [int(g) for g in match.groups()[:6:2]]
        shares = [float(g) for g in match.groups()[1:6:2]]
        assert classes[0] == probs[i].argmax() and len(set(classes)) == 3
        assert shares == sorted(shares, reverse=True) and sum(shares) <= 100.05
        assert (match.group(7) is not None) == (shares[0] < 80)
    # --show: the four 28x28 images the network received, side by side.
    sheet = tmp_path / "outputs" / "predict-image.png"
    assert shown == f"shown: {sheet} (what the network received, in the order above)"
    with Image.open(sheet) as picture:
        assert picture.size == (4 * 28 * 6 + 3 * 4, 28 * 6)
        first = np.asarray(picture)[::6, :28 * 6:6] / 255.0              # (28, 28)
    expected = image.prepare(image.read_grey(paths[0]))
    np.testing.assert_allclose(first.ravel(), expected, atol=1 / 255 + 1e-6)
    # With test-time augmentation, as predict: the accuracy shown is said to be without.
    done = run_cli(*sets, "--set=predict.tta_shift=1", "predict-image", str(paths[0]))
    assert done.returncode == 0, done.stderr
    model_line, line = done.stdout.splitlines()
    assert model_line.endswith("without test-time augmentation; classifying with it)")
    with_tta = model.ensemble_proba(nets, expected[None], 4096, tta_shift=1.0)[0]
    top, share = re.match(re.escape(str(paths[0])) + r": (\d) \(([\d.]+)%\)", line).groups()
    assert int(top) == with_tta.argmax()
    assert float(share) == pytest.approx(100 * with_tta.max(), abs=0.06)


def test_predict_image_without_a_model_says_what_to_run(tmp_path):
    path = tmp_path / "x.png"
    Image.new("L", (28, 28), 0).save(path)
    done = run_cli(f"--set=outputs={tmp_path / 'none'}", "predict-image", str(path))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "model.npz is missing: run `python run.py train` first" in done.stderr
    done = run_cli(f"--set=outputs={tmp_path / 'none'}", "predict-image")
    assert done.returncode == 1 and "expected one or more image paths" in done.stderr


def photo(digit, path, rng, size=300, tilt=8.0):
    """An MNIST digit (28, 28) uint8 as a phone photo would show it: dark blue ink on
    cream paper, light falling from 55% on one side to 100% on the other, sensor
    noise, a tilt, saved as JPEG."""
    big = Image.fromarray(digit).resize((size, size), Image.Resampling.BICUBIC)
    ink_ = np.asarray(big.rotate(tilt, Image.Resampling.BICUBIC), np.float32)[..., None] / 255
    rgb = np.array([0.93, 0.88, 0.78]) * (1 - ink_) + np.array([0.15, 0.15, 0.25]) * ink_
    light = np.linspace(0.55, 1.0, size)[None, :, None]
    rgb = rgb * (light if rng.random() < 0.5 else light[:, ::-1])
    rgb += rng.normal(0, 0.03, rgb.shape)
    Image.fromarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8)).save(path, quality=85)
    return path


def test_photos_under_uneven_light_on_tinted_paper_look_like_the_digit(tmp_path):
    """Measured against the paper near it, the ink of each of ten photos comes out as
    the MNIST digit it was made from. Judged by the paper's median brightness at the
    border, the darker side of the page was taken for ink, and most of these failed."""
    digits, _ = sample_digits(10)
    rng = np.random.default_rng(0)
    scores = [correlation(image.prepare(image.read_grey(
        photo(digit, tmp_path / f"photo_{i}.jpg", rng, tilt=0))), digit / 255.0)
        for i, digit in enumerate(digits)]
    # 0.80-0.99 here, mean 0.94; 0.13-0.79, mean 0.52, with the paper judged at the border.
    assert min(scores) > 0.75 and np.mean(scores) > 0.9, scores


def test_a_hairline_on_a_large_page_is_found(tmp_path):
    """A one-pixel stroke on a 1200-pixel page falls between the pixels of any
    subsampled copy: the ink box must still find it (a 1 drawn with a fine pen)."""
    page = np.full((1200, 1200), 255, np.uint8)
    page[100:1100, 601] = 0
    Image.fromarray(page).save(tmp_path / "hairline.png")
    pixels = image.prepare(image.read_grey(tmp_path / "hairline.png")).reshape(28, 28)
    columns = np.flatnonzero(pixels.sum(axis=0))
    assert pixels.sum() > 10 and len(columns) <= 4 and 12 <= columns.mean() <= 16


# Photos as people take them (tests/photos.py): each kind made from ten digits of the
# bundled sample. Prepared, each must look like its own digit more than like any of
# the other nine: what a faithful preparation gives the network to classify.
@pytest.mark.parametrize("kind", ["desk", "frame", "dim", "specks", "shadow", "transparent"])
def test_photos_of_each_kind_come_out_as_their_digit(tmp_path, kind):
    digits, _ = sample_digits(10)
    rng = np.random.default_rng(1)
    clean = digits.reshape(10, -1) / 255.0                              # (10, 784)
    nearest, own = [], []
    for i, digit in enumerate(digits):
        path = tmp_path / f"{kind}-{i}.png"
        photos.kinds(digit, i, rng)[kind].save(path)
        x = image.prepare(image.read_grey(path), str(path))
        similar = [correlation(x, c) for c in clean]
        nearest.append(int(np.argmax(similar)))
        own.append(similar[i])
    assert nearest == list(range(10)), (kind, nearest)
    assert np.mean(own) > 0.85 and min(own) > 0.7, (kind, own)


def test_the_page_is_found_inside_the_picture():
    rng = np.random.default_rng(2)
    digit = sample_digits(1)[0][0]
    page = photos.page(digit, rng)                                       # (240, 240)
    for width, shade in [(8, 0.08), (40, 0.5), (70, 0.3)]:
        found = image.find_page(photos.on_desk(page, width, shade, rng))
        assert found is not None
        rows, cols = found
        # The page begins `width` (or up to width * 1.5) in; a few lines of blur are left out.
        assert width <= rows.start <= width + 6 and width <= cols.start <= 1.5 * width + 6
        assert 240 - 12 <= rows.stop - rows.start <= 240, (width, found)
    # Light falling off to 55%, a shadow, or a clean digit on either ground: no page.
    assert image.find_page(photos.page(digit, rng, light=0.55)) is None
    assert image.find_page(photos.shadowed(page, rng)) is None
    assert image.find_page(digit / 255.0) is None and image.find_page(1 - digit / 255.0) is None


@pytest.mark.parametrize("width", [1, 2, 3])
def test_a_frame_is_not_taken_for_ink(width):
    rng = np.random.default_rng(3)
    digit = sample_digits(1)[0][0]
    framed = image.prepare_page(photos.framed(photos.page(digit, rng), width))
    assert framed.crop is not None and framed.crop[0].start >= width
    assert correlation(framed.pixels, digit / 255.0) > 0.9


def test_dim_paper_is_still_paper():
    """Paper at 30-45% grey is darker than mid-grey: judged by its brightness alone,
    it was taken for ink and the digit for a hole."""
    rng = np.random.default_rng(4)
    digit = sample_digits(1)[0][0]
    for paper in (0.30, 0.35, 0.45):
        grey = photos.page(digit, rng, paper=paper, ink=0.04, light=0.8)
        assert np.median(grey) < 0.5
        assert image.paper_is_light(grey) == (True, False)
        assert correlation(image.prepare(grey), digit / 255.0) > 0.85


@pytest.mark.parametrize("name", ["speck", "dot", "speck on a desk"])
def test_a_speck_alone_is_no_digit(tmp_path, name):
    photos.blanks(np.random.default_rng(5))[name].save(tmp_path / "page.png")
    with pytest.raises(PipelineError, match=r"page\.png: found no digit \(only a mark \d+x\d+ "
                                            r"pixels on a \d+x\d+ page, far smaller than a "
                                            r"handwritten digit\)"):
        image.prepare(image.read_grey(tmp_path / "page.png"), str(tmp_path / "page.png"))


def test_a_small_mark_and_a_blank_page_are_doubtful():
    """Marks between 1/20 and 1/8 of the page, and a page whose two tails of grey levels
    reach as far (noise only), are prepared but marked: predict-image says unsure."""
    page = np.full((240, 240), 0.9)
    page[100:120, 110:118] = 0.1                                        # 20 px: 1/12
    assert image.prepare_page(page).doubts == ["a small mark for a digit on this page"]
    blank = np.asarray(photos.blanks(np.random.default_rng(6))["blank"], np.float32) / 255
    assert "paper and ink may be swapped" in image.prepare_page(blank).doubts


@pytest.mark.parametrize("colour", [(255, 255, 255), (0, 0, 0), (200, 30, 30)])
def test_transparent_strokes_come_from_the_alpha_channel(tmp_path, colour):
    """White ink on a transparent PNG was laid on white paper: "one flat shade"."""
    digit = sample_digits(1)[0][0]
    photos.transparent(digit, colour).save(tmp_path / "ink.png")
    grey = image.read_grey(tmp_path / "ink.png")
    assert grey.min() == 0.0 and np.median(grey) == 1.0                 # black on white
    assert correlation(image.prepare(grey), digit / 255.0) > 0.9


def test_predict_image_says_where_the_page_was_and_why_it_is_unsure(tmp_path, rng):
    nets = [network.init_params(rng)]
    (tmp_path / "out" / "train").mkdir(parents=True)
    artifacts.save_arrays(tmp_path / "out" / "train" / "model.npz",
                          **{k: np.stack([n[k] for n in nets]) for k in network.PARAM_NAMES})
    artifacts.write_json(tmp_path / "out" / "train" / "metrics.json",
                         {"val_accuracy": 0.9601, "val_held_out": False})
    digit = sample_digits(1)[0][0]
    photos.kinds(digit, 1, np.random.default_rng(7))["desk"].save(tmp_path / "desk.png")
    small = np.full((240, 240), 230, np.uint8)
    small[100:120, 110:118] = 20
    Image.fromarray(small).save(tmp_path / "small.png")
    done = run_cli(f"--set=outputs={tmp_path / 'out'}", "--set=data.sample=null",
                   "predict-image", "--show", str(tmp_path / "desk.png"), str(tmp_path / "small.png"))
    assert done.returncode == 0, done.stderr
    model_line, desk, mark, shown = done.stdout.splitlines()
    assert model_line.endswith("(1 network, validation accuracy 96.01%, not held out: "
                               "train.all_rows=true)")
    found = image.prepare_page(image.read_grey(tmp_path / "desk.png"))
    assert desk.endswith(f"  [{found.where()}]") and found.where().startswith(
        "page found inside the picture: rows ")
    assert re.search(r"  unsure \(a small mark for a digit on this page\)$", mark), mark
    assert shown.endswith("in the order above; under each, the page found inside a larger "
                          "picture)")
    with Image.open(tmp_path / "out" / "predict-image.png") as sheet:
        assert sheet.size == (2 * 28 * 6 + 4, 2 * 28 * 6 + 4)          # digits, then crops
        crop = np.asarray(sheet)[28 * 6 + 4:, :28 * 6]
    assert crop.min() < 100 and crop.max() > 150                       # the page's ink and paper
