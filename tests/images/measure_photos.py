"""How many photos of each kind (tests/photos.py) the trained model reads right:
`python tests/images/measure_photos.py OUTPUTS [N]`, OUTPUTS the folder of a run.
The digits are the first N (20) validation rows, which the model did not train on
unless train.all_rows was set (then the script refuses). Prints, for each kind,
right / N, the confident wrong answers and the answers marked unsure; then what
pages with no digit on them give."""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[1])]

from photos import blanks, kinds

from pipeline import artifacts
from pipeline.commands import predict_image
from pipeline.errors import PipelineError
from pipeline.images.prepare import prepare_files
from pipeline.training.ensemble import ensemble_proba


def main(outputs: Path, n: int = 20) -> None:
    if not artifacts.load_json(outputs / "train" / "metrics.json").get("val_held_out", True):
        raise SystemExit(f"{outputs}: trained on the validation rows (train.all_rows)")
    nets = predict_image.load_model(outputs / "train" / "model.npz")
    X = np.load(outputs / "preprocess" / "val_x.npy")[:n]                # (n, 784)
    y = np.load(outputs / "preprocess" / "val_y.npy")[:n]
    clean = np.argmax(ensemble_proba(nets, X, 4096), axis=1)
    print(f"{'clean 28x28':12s} {np.sum(clean == y):2d}/{n} right (the rows as the model reads them)")
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        files: dict[str, list[Path]] = {}
        for i, x in enumerate(X):
            digit = np.round(x * 255).astype(np.uint8).reshape(28, 28)
            for kind, img in kinds(digit, i, rng).items():
                files.setdefault(kind, []).append(Path(tmp) / f"{kind}-{i}.png")
                img.save(files[kind][-1])
        for kind, paths in files.items():
            prepared = prepare_files(paths)
            tops = predict_image.top_classes(nets, prepared)
            right = sure_wrong = unsure = 0
            for item, top, label in zip(prepared, tops, y):
                if isinstance(top, PipelineError):
                    continue
                doubtful = top[0][1] < predict_image.UNSURE or bool(item.doubts)
                right += top[0][0] == label
                unsure += doubtful
                sure_wrong += top[0][0] != label and not doubtful
            print(f"{kind:12s} {right:2d}/{n} right, {sure_wrong} confidently wrong, "
                  f"{unsure} marked unsure, {sum(isinstance(t, PipelineError) for t in tops)} "
                  "with no digit found")
        for name, img in blanks(rng).items():
            path = Path(tmp) / "blank.png"
            img.save(path)
            item = prepare_files([path])[0]
            top = predict_image.top_classes(nets, [item])[0]
            said = ("no digit found" if isinstance(top, PipelineError) else
                    predict_image.describe(name, top, item.doubts))
            print(f"{name:16s} {said}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), *(int(a) for a in sys.argv[2:3]))
