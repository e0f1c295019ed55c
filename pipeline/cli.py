"""The command line: parse arguments, load params, hand over to the runner."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from pipeline import artifacts, ingest, kaggle, params as params_mod, predict, runner, stages
from pipeline.errors import PipelineError

log = logging.getLogger("pipeline")

USAGE_EPILOG = f"""\
stages, in order: {' -> '.join(stages.STAGES)}
commands: status (what is up to date, what is stale and why)
          predict-image PATH...  (the top 3 classes of your own digit images)

examples:
  python run.py                          run what is out of date
  python run.py train                    train, after what it needs (as make, dvc repro)
  python run.py train --single           train alone, refusing a stale upstream
  python run.py --set train.epochs=5     override a param for this run
  python run.py --from preprocess        that stage and every later one, if stale
  python run.py submit --kaggle "first"  make submission.csv and upload it to Kaggle
  python run.py predict-image seven.png  classify a PNG or JPEG of a digit
"""


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line's stages, options and overrides."""
    parser = argparse.ArgumentParser(
        prog="run.py", description="Kaggle Digit Recognizer: CSVs -> submission.csv.",
        epilog=USAGE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("targets", nargs="*", metavar="STAGE",
                        help="stages to bring up to date, with what they are made from "
                        "(default: all), or 'status'")
    parser.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a param, e.g. train.epochs=5 "
                        "(repeatable; the value is read as YAML)")
    parser.add_argument("--force", action="store_true",
                        help="run the named stages even if up to date; what they are made "
                        "from still runs only if stale (as dvc repro --force)")
    parser.add_argument("--from", dest="start", metavar="STAGE",
                        help="name this stage and every stage after it: those that are stale "
                        "run (with --force, all of them)")
    parser.add_argument("--single", action="store_true",
                        help="run only the named stages, not the stale ones they are made "
                        "from, and refuse if any of those is not up to date (like dvc repro "
                        "--single-item)")
    parser.add_argument("--kaggle", metavar="MESSAGE",
                        help="after the run, upload submission.csv to the Kaggle competition "
                        "with this message (needs the kaggle command)")
    parser.add_argument("--show", action="store_true",
                        help="predict-image: also save the 28x28 images the network received, "
                             "as one picture in the outputs folder")
    parser.add_argument("--quiet", action="store_true", help="print only warnings and errors")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    return parser.parse_intermixed_args(argv)    # options may follow the paths, or precede them


class _Format(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        return f"warning: {text}" if record.levelno >= logging.WARNING else text


def setup_logging(quiet: bool) -> None:
    """Plain lines on stdout from the "pipeline" logger; warnings only when quiet."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_Format())
    log.handlers[:] = [handler]
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    log.propagate = False


def print_status(params: dict) -> None:
    """One line per step: up to date, stale (and why), or never run."""
    rows = runner.status(params)
    width = max(len(name) for name, _ in rows)
    for name, st in rows:
        print(f"{name:<{width}}  {st.describe()}")


LOCAL_PARAMS = "params.local.yaml"     # beside the params file: one machine's settings


def sample_outputs(params: dict) -> bool:
    """Whether the run uses the bundled sample (neither data file is found); its
    outputs then go to <outputs>/sample, so that a demo never replaces, or mixes
    with, outputs made from the competition's data."""
    *_, sample = ingest.resolve_data(params["data.train"], params["data.test"],
                                     params["data.sample"])
    if sample:
        params["outputs"] = str(Path(params["outputs"]) / "sample")
    return sample


def summarize(params: dict, sample: bool) -> None:
    """The closing lines: validation accuracy, the submission, the report and what
    to do next; each flagged when the step that wrote it is behind the params and
    data, and, after a run on the bundled sample, marked as a demo."""
    if not log.isEnabledFor(logging.INFO):          # --quiet: no closing lines
        return
    metrics, submission = stages.metrics_path(params), stages.submission_path(params)
    try:
        states = dict(runner.status(params))
    except (PipelineError, OSError):                # the run itself went well: say less
        states = {}

    def behind(step: str) -> str:
        st = states.get(step)
        if st is None or (st.state == "up to date" and not st.reasons):
            return ""
        return (" (out of date: run `python run.py` with the same --params and --set "
                "to update it)")

    demo = " (the bundled sample: a demo, not for upload)" if sample else ""
    if metrics.exists():
        scores = artifacts.load_json(metrics)
        if scores.get("val_accuracy") is not None:
            held_out = "" if scores.get("val_held_out", True) else predict.NOT_HELD_OUT
            ci = scores.get("val_accuracy_ci95")
            interval = (f" (95% interval {100 * ci['low']:.2f}-{100 * ci['high']:.2f}%, "
                        f"{scores['val_errors']} of {scores['val_rows']} wrong)") if ci else ""
            log.info("validation accuracy: %.2f%%%s%s%s", 100 * scores["val_accuracy"],
                     interval, held_out, behind("predict"))
    if submission.exists():
        log.info("submission: %s%s%s", submission, demo, behind("submit"))
    page = stages.artifact(params, "report", "index.html")
    if page.exists():
        log.info("report: %s (open it in a browser)%s", page, behind("report"))
    if sample:
        log.info("next: put Kaggle's train.csv and test.csv, or digit-recognizer.zip, in %s/ "
                 "and run again (README.md, Getting the data)", Path(params["data.train"]).parent)
    elif submission.exists() and not behind("submit"):
        log.info('next: upload it with `python run.py submit --kaggle "your message"`')


def upload_if_current(params: dict, message: str, sample: bool) -> None:
    """Upload submission.csv, unless it was made from the bundled sample or a step
    it is made from is out of date."""
    if sample:
        raise PipelineError("not uploading: this submission was made from the bundled sample, "
                            "a demo; Kaggle scores only its own test.csv (README.md, Getting "
                            "the data)")
    late = [f"{name} ({st.describe()})" for name, st in runner.status(params)
            if name != "report" and st.state == "stale"]
    if late:
        raise PipelineError(f"not uploading: the submission is not up to date with the params "
                            f"and data: {'; '.join(late)}. Run `python run.py` first")
    kaggle.upload(stages.submission_path(params), message)


def predict_images(params: dict, paths: list[str], show: bool) -> int:
    """`predict-image PATH...`: name the model, then print each image's three
    likeliest digits; with `show`, save the images as the network received them."""
    from pipeline import image     # Pillow is loaded only for this command
    if not paths:
        raise PipelineError("predict-image: expected one or more image paths (PNG or JPEG)")
    model = stages.artifact(params, "train", "model.npz")
    nets = image.load_model(model)
    scores = stages.artifact(params, "train", "metrics.json")
    accuracy = artifacts.load_json(scores).get("val_accuracy") if scores.exists() else None
    print(f"model: {model} ({len(nets)} network{'s' if len(nets) > 1 else ''}"
          + (f", validation accuracy {100 * accuracy:.2f}%)" if accuracy else ")"), flush=True)
    prepared = image.prepare_files([Path(p) for p in paths])
    failed = False
    for path, top in zip(paths, image.top_classes(nets, prepared, params["predict.batch_size"])):
        if isinstance(top, PipelineError):
            print(f"error: {top}", file=sys.stderr, flush=True)
            failed = True
        else:
            print(image.describe(path, top), flush=True)
    seen = [p for p in prepared if not isinstance(p, PipelineError)]
    if show and seen:
        where = Path(params["outputs"]) / "predict-image.png"
        with artifacts.atomic_path(where) as tmp:
            image.sheet(seen).save(tmp, format="PNG")
        print(f"shown: {where} (what the network received, in the order above)", flush=True)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status (0, 1 on an error, 130 on Ctrl-C)."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    setup_logging(args.quiet)
    try:
        params = params_mod.load(args.params, args.overrides,
                                 local=Path(args.params).with_name(LOCAL_PARAMS))
        sample = sample_outputs(params)
        if args.targets[:1] == ["status"]:
            if args.targets[1:] or args.start:
                raise PipelineError("status takes no stage names: it reports every step")
            print_status(params)
            return 0
        if args.start and args.targets:
            raise PipelineError(f"give stage names or --from {args.start}, not both")
        if args.targets[:1] == ["predict-image"]:
            return predict_images(params, args.targets[1:], args.show)
        steps = runner.select(args.targets, args.start)
        planned = runner.plan(params, steps, args.single)
        if any(s.stage == "ingest" for s in planned):
            kaggle.offer_download(params["data.train"], params["data.test"])
        if sample and any(s.stage == "ingest" for s in planned):
            log.warning("%s and %s not found: using the bundled sample in %s, a demo, with "
                        "its outputs in %s. For the competition's data see README.md "
                        "(Getting the data).", params["data.train"], params["data.test"],
                        params["data.sample"], params["outputs"])
            # The long hint only when the sample is read, not on every later run.
            fresh = runner.Runner(params)
            if any((args.force and s in steps) or fresh.check(s).state != "up to date"
                   for s in planned if s.stage == "ingest"):
                log.info(kaggle.download_hint(Path(params["data.train"])))
        if args.kaggle is None:
            runner.run(params, steps, force=args.force, single=args.single)
        else:
            # Upload once submit is done: a failing report must not hold it back.
            report = [s for s in steps if s.stage == "report"]
            runner.run(params, [s for s in steps if s not in report], force=args.force,
                       single=args.single)
            upload_if_current(params, args.kaggle, sample)
            runner.run(params, report, force=args.force, single=args.single)
        summarize(params, sample)
        return 0
    except PipelineError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:     # `python run.py status | head -1`: the reader left
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:      # an outputs folder that cannot be written, a full disk
        if args.debug:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except MemoryError as exc:  # e.g. --set train.hidden=100000000
        if args.debug:
            raise
        print(f"error: not enough memory ({str(exc) or 'an allocation failed'}): smaller sizes "
              "in the params (train.hidden, the batch sizes) need less", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: completed outputs are kept, and training goes on from its last "
              "complete epoch: run the same command again", file=sys.stderr)
        return 130
