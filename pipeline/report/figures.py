"""Stage 6, report: PNG figures of what the network learned, and an index.html.

Figures are drawn with matplotlib's Agg canvas (no display, no pyplot state).
Tiles of digits and of weights are laid out as one mosaic image per figure,
which keeps the stage to a few seconds on the full data. The page is
templates/index.html with static/report.css, filled by `index_html`; it also carries
the "Draw a digit" panel (page.py), which runs the network in the browser.
"""
from __future__ import annotations

import csv
import html
import io
import logging
from pathlib import Path
from string import Template

import numpy as np

from pipeline import artifacts
from pipeline.errors import PipelineError
from pipeline.nn import metrics as metrics_mod
from pipeline.report import page as page_mod
from pipeline.report import runs_table
from pipeline.training import ensemble as model

log = logging.getLogger(__name__)

SIDE = 28                       # digits and first-layer weights are 28x28 images
FIGURES = {                     # output name -> what the figure shows
    "learning_curves": "Learning curves",
    "confusion_matrix": "Confusion matrix (validation)",
    "misclassified": "Misclassified validation digits",
    "hidden_weights": "First-layer weights",
    "test_predictions": "Predicted labels on the test set",
}
MAX_MISTAKES = 48               # tiles in the misclassified grid (6 rows of 8)
TRAIN_COLOR, VAL_COLOR = "#1f77b4", "#d62728"
INDEX = Template(page_mod.asset("templates/index.html"))
STYLE = page_mod.asset("static/report.css")


def read_history(path: Path) -> dict[str, np.ndarray]:
    """The history CSV as columns of floats, keyed by header name."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except FileNotFoundError:
        raise PipelineError(f"{path} is missing: run `python run.py train` first") from None
    if len(rows) < 2:
        raise PipelineError(f"{path}: expected a header and one row per epoch, found "
                            f"{len(rows)} line(s): run `python run.py train --force`")
    header, body = rows[0], rows[1:]
    for name in ("epoch", "loss", "train_accuracy", "val_loss", "val_accuracy"):
        if name not in header:
            raise PipelineError(f"{path}, line 1: expected a column '{name}', found "
                                f"{','.join(header)}")
    try:
        values = np.array(body, dtype=np.float64)                   # (epochs, columns)
    except ValueError:
        raise PipelineError(f"{path}: expected numbers in every row") from None
    return {name: values[:, i] for i, name in enumerate(header)}


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def mosaic(tiles: np.ndarray, cols: int, gap: int = 1, fill: float = np.nan) -> np.ndarray:
    """Lay out tiles (n, h, w) in rows of `cols`, `gap` pixels apart, as one image."""
    n, h, w = tiles.shape
    rows = -(-n // cols)
    out = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap), fill, np.float32)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        out[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = tile
    return out


def learning_curves(history: dict[str, np.ndarray]):
    """Loss and accuracy per epoch, training and validation (one line per member)."""
    fig = _figure(10, 4)
    ax_loss, ax_acc = fig.subplots(1, 2)
    member = history.get("member", np.zeros_like(history["epoch"]))
    for k in np.unique(member):
        rows = member == k
        epoch = history["epoch"][rows]
        first = k == member.min()
        alpha = 1.0 if first else 0.45
        ax_loss.plot(epoch, history["loss"][rows], "o-", ms=3, color=TRAIN_COLOR, alpha=alpha,
                     label="training (cross-entropy + L2)" if first else None)
        ax_loss.plot(epoch, history["val_loss"][rows], "o-", ms=3, color=VAL_COLOR,
                     alpha=alpha, label="validation" if first else None)
        ax_acc.plot(epoch, 100 * history["train_accuracy"][rows], "o-", ms=3,
                    color=TRAIN_COLOR, alpha=alpha, label="training" if first else None)
        ax_acc.plot(epoch, 100 * history["val_accuracy"][rows], "o-", ms=3, color=VAL_COLOR,
                    alpha=alpha, label="validation" if first else None)
    members = len(np.unique(member))
    note = f" ({members} members; the first drawn solid)" if members > 1 else ""
    ax_loss.set(title="Loss" + note, xlabel="epoch", ylabel="mean loss per image")
    ax_acc.set(title="Accuracy", xlabel="epoch", ylabel="accuracy (%)")
    for ax in (ax_loss, ax_acc):
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend()
    return fig


def confusion_heatmap(cm: np.ndarray):
    """The confusion matrix as a heat map (log colour scale) with every count written."""
    from matplotlib.colors import LogNorm

    fig = _figure(7, 6)
    ax = fig.subplots()
    n = len(cm)
    shown = np.ma.masked_equal(cm, 0)               # empty cells stay white
    vmax = max(int(cm.max()), 2)
    image = ax.imshow(shown, cmap="Blues", norm=LogNorm(vmin=1, vmax=vmax))
    for t in range(n):
        for p in range(n):
            if cm[t, p]:
                dark = np.log(cm[t, p]) > 0.6 * np.log(vmax)
                ax.text(p, t, str(cm[t, p]), ha="center", va="center", fontsize=9,
                        color="white" if dark else "black",
                        fontweight="normal" if t == p else "bold")
    accuracy = np.trace(cm) / max(cm.sum(), 1)
    ax.set(xticks=range(n), yticks=range(n), xlabel="predicted label", ylabel="true label",
           title=f"Validation: {int(np.trace(cm))} of {int(cm.sum())} right "
                 f"({100 * accuracy:.2f}%)")
    fig.colorbar(image, ax=ax, label="images (log scale)", shrink=0.8)
    return fig


def worst_mistakes(y: np.ndarray, probs: np.ndarray, limit: int) -> tuple[np.ndarray, int]:
    """Indices of up to `limit` misclassified rows, the most confidently wrong
    first, and how many rows are misclassified in all. y (N,), probs (N, 10)."""
    pred = probs.argmax(axis=1)
    wrong = np.flatnonzero(pred != y)
    confidence = probs[wrong, pred[wrong]]
    return wrong[np.argsort(-confidence, kind="stable")][:limit], len(wrong)


def misclassified_grid(images: np.ndarray, y: np.ndarray, probs: np.ndarray,
                       limit: int = MAX_MISTAKES):
    """The most confidently wrong validation digits, each titled true -> predicted
    with the predicted class's probability. images (N, 784), y (N,), probs (N, 10)."""
    pred = probs.argmax(axis=1)
    order, n_wrong = worst_mistakes(y, probs, limit)
    cols = 8
    rows = max(1, -(-len(order) // cols))
    fig = _figure(cols * 1.15, rows * 1.35 + 0.6)
    ax = fig.subplots()
    ax.set_axis_off()
    if not len(order):
        ax.text(0.5, 0.5, "no misclassified validation digits", ha="center", va="center")
        return fig
    label_h = 11                                     # pixels left free above each tile
    tiles = np.full((len(order), SIDE + label_h, SIDE), np.nan, np.float32)
    tiles[:, label_h:] = images[order].reshape(-1, SIDE, SIDE)
    ax.imshow(mosaic(tiles, cols, gap=3), cmap="gray_r", vmin=0, vmax=1,
              interpolation="nearest")
    for i, idx in enumerate(order):
        r, c = divmod(i, cols)
        x = c * (SIDE + 3) + SIDE / 2
        y_top = r * (SIDE + label_h + 3) + label_h - 1
        p = np.floor(1000 * probs[idx, pred[idx]]) / 10     # floored: 99.96% is not "100%"
        ax.text(x, y_top, f"{y[idx]}\u2192{pred[idx]}  {p:.1f}%",
                ha="center", va="bottom", fontsize=8.5)
    ax.set_title(f"{len(order)} of {n_wrong} misclassified validation digits, most "
                 f"confident first (true\u2192predicted, predicted probability)", fontsize=10)
    return fig


def weight_tiles(W1: np.ndarray) -> tuple[np.ndarray, int]:
    """W1 (784, H) -> tiles (H, 28, 28) in [-1, 1], each unit divided by its largest
    |weight|, but by no less than a tenth of the median unit's, so near-zero units
    stay near blank; and the number of such near-zero units."""
    units = W1.shape[1]
    tiles = W1.T.reshape(units, SIDE, SIDE).astype(np.float32)     # (H, 28, 28)
    peak = np.abs(tiles).max(axis=(1, 2))                           # (H,)
    floor = 0.1 * float(np.median(peak))
    return tiles / np.maximum(peak, floor)[:, None, None], int((peak < floor).sum())


def weights_grid(W1: np.ndarray, members: int = 1):
    """Each hidden unit's incoming weights W1[:, j] (784,) as a 28x28 image, on a
    diverging scale symmetric about 0 and fitted to each unit. A unit whose weights
    are all below a tenth of the typical unit's (a ReLU that never switches on, so
    only the L2 penalty moves it) is drawn near blank, not as magnified noise."""
    from matplotlib import colormaps

    tiles, faint = weight_tiles(W1)
    units = len(tiles)
    cols = int(np.ceil(np.sqrt(units)))
    fig = _figure(9, 9.6)
    ax = fig.subplots()
    ax.set_axis_off()
    cmap = colormaps["RdBu_r"].with_extremes(bad="#cccccc")
    ax.imshow(mosaic(tiles, cols), cmap=cmap, vmin=-1, vmax=1, interpolation="nearest")
    which = f" (the first of {members} networks)" if members > 1 else ""
    blank = f"; {faint} near-blank: weights decayed to ~0" if faint else ""
    ax.set_title(f"First layer{which}: the incoming weights of each of the {units} hidden "
                 f"units as a 28x28 image\n(red positive, blue negative, each unit on its "
                 f"own scale{blank})", fontsize=10)
    return fig


def prediction_counts(test_labels: np.ndarray, val_y: np.ndarray):
    """Bars of predicted test labels per class, with the count each class would
    have if the test set followed the validation labels' frequencies."""
    counts = np.bincount(test_labels, minlength=10)                 # (10,)
    expected = np.bincount(val_y, minlength=10) / max(len(val_y), 1) * len(test_labels)
    fig = _figure(8, 4)
    ax = fig.subplots()
    classes = np.arange(len(counts))
    bars = ax.bar(classes, counts, color=TRAIN_COLOR, label="predicted on the test set")
    ax.bar_label(bars, label_type="center", color="white", fontsize=8)
    ax.scatter(classes, expected, marker="_", s=700, linewidths=2, color="black", zorder=3,
               label="expected at the validation labels' frequencies")
    ax.set(xticks=classes, xlabel="predicted label", ylabel="test images",
           title=f"Predicted labels of the {len(test_labels)} test images")
    ax.set_ylim(0, max(counts.max(), expected.max()) * 1.25)
    ax.legend(loc="upper center", ncols=2, fontsize=8, frameon=False)
    return fig


def save_png(fig, path: Path) -> None:
    """Render `fig` to PNG and write it atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    artifacts.write_bytes(path, buf.getvalue())


def runs_section(runs: tuple[list[str], list[list[str]]] | None) -> str:
    """The page's "Runs" section: `runs` is a header and rows of cells, as
    runs_table.cells gives them; "" when there are no rows."""
    if not (runs and runs[1]):
        return ""
    esc = html.escape
    header = "".join(f"<th>{esc(h)}</th>" for h in runs[0])
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>\n"
                   for row in runs[1])
    return (f"<h2>Runs</h2>\n<p>Every training run in this outputs folder (`python run.py "
            f"runs`), newest last, as the log stood when this page was drawn; * marks "
            f"the best held-out accuracy.</p>\n"
            f"<table>\n<tr>{header}</tr>\n{body}</table>\n")


def index_html(scores: dict, history: dict[str, np.ndarray], figures: dict[str, str],
               held_out: bool = True, panel: str = "", sample: bool = False,
               runs: tuple[list[str], list[list[str]]] | None = None) -> str:
    """The report page, templates/index.html filled in: headline metrics, the
    `panel` (page.panel's HTML, if any), per-class scores, every figure, then the
    table of runs (see `runs_section`). `figures` maps a PNG's file name to its
    heading; `held_out` is False when the networks were trained on the validation
    rows too; `sample` says the run used the bundled sample."""
    esc = html.escape
    epochs = int(history["epoch"].max())
    accuracy = f"{100 * scores['val_accuracy']:.2f}%"
    if "val_accuracy_ci95" in scores:
        ci = scores["val_accuracy_ci95"]
        accuracy += (f" (95% interval {100 * ci['low']:.2f}-{100 * ci['high']:.2f}%; "
                     f"{scores['val_errors']} of {scores['val_rows']} wrong)")
    headline = [("validation accuracy", accuracy),
                ("validation loss (cross-entropy)", f"{scores['val_loss']:.4f}"),
                ("macro F1", f"{scores['macro_f1']:.4f}"),
                ("validation images", str(scores["val_rows"])),
                ("epochs run", str(epochs))]
    if scores.get("tta_shift"):
        headline.append(("test-time augmentation", f"each image and its copies moved "
                         f"{scores['tta_shift']:g} pixel(s) left, right, up and down, averaged"))
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in headline)
    per_class = "".join(
        f"<tr><td>{c}</td><td>{s['precision']:.4f}</td><td>{s['recall']:.4f}</td>"
        f"<td>{s['f1']:.4f}</td><td>{s['support']}</td></tr>"
        for c, s in sorted(scores["per_class"].items()))
    source = ("Scores on the validation rows held out from training (from metrics.json)."
              if held_out else "<strong>Not held out:</strong> the networks were trained on "
              "the validation rows too (train.all_rows), so these scores flatter them.")
    if sample:
        source = ("<strong>Made from the bundled sample</strong> (data/sample): a demo, not "
                  "for upload. Put the competition's files in data/ and run again. " + source)
    figs = "".join(f'<h2>{esc(title)}</h2>\n<img src="{esc(name)}" alt="{esc(title)}">\n'
                   for name, title in figures.items())
    style = STYLE + ("\n" + page_mod.STYLE if panel else "")
    return INDEX.substitute(style=style, source=source, headline=rows, panel=panel,
                            per_class=per_class, figures=figs, runs=runs_section(runs))


def run(inputs: dict, out: dict, sample: bool = False, outputs: str | None = None) -> None:
    """Draw every figure and the index page. `inputs` maps history, train_metrics,
    model, val_x, val_y, val_probs, test_labels, metrics and scores to paths; `out`
    maps each name in FIGURES and `index` to its path. `sample`: see `index_html`; the
    runs table is the log of the `outputs` folder (if given) as it stands now."""
    history = read_history(inputs["history"])
    nets = model.load(inputs["model"])
    val_x = artifacts.load_array(inputs["val_x"], "preprocess")       # (N_val, 784) float32
    val_y = artifacts.load_array(inputs["val_y"], "preprocess")       # (N_val,) int64
    val_probs = artifacts.load_array(inputs["val_probs"], "predict")  # (N_val, 10)
    test_labels = artifacts.load_array(inputs["test_labels"], "predict")  # (M,) int64
    scores = {**artifacts.load_json(inputs["metrics"], "predict"),     # the headline
              **artifacts.load_json(inputs["scores"], "predict")}     # per class, matrix
    if not (len(val_x) == len(val_y) == len(val_probs)):
        raise PipelineError(
            f"the validation artifacts disagree: {len(val_x)} images, {len(val_y)} labels, "
            f"{len(val_probs)} predictions: run `python run.py --from predict --force`")
    if val_x.shape[1] != SIDE * SIDE:
        raise PipelineError(f"{inputs['val_x']}: expected 28x28 images (784 columns), "
                            f"found {val_x.shape[1]}")
    drawn = {
        "learning_curves": learning_curves(history),
        "confusion_matrix": confusion_heatmap(metrics_mod.matrix_from_summary(scores)),
        "misclassified": misclassified_grid(val_x, val_y, val_probs),
        "hidden_weights": weights_grid(nets[0]["W1"], len(nets)),
        "test_predictions": prediction_counts(test_labels, val_y),
    }
    for name, fig in drawn.items():
        save_png(fig, out[name])
    held_out = artifacts.load_json(inputs["train_metrics"], "train").get("val_held_out", True)
    panel = page_mod.panel(nets[page_mod.MEMBER], len(nets), bool(scores.get("tta_shift")))
    runs = runs_table.cells(runs_table.load_table(outputs)) if outputs else None
    page = index_html(scores, history, {out[n].name: FIGURES[n] for n in FIGURES}, held_out,
                      panel, sample, runs)
    artifacts.write_text(out["index"], page)
    log.info("report: %s", out["index"])
