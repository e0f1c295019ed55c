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
  python run.py train predict            just those stages
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
                        help="stages to run (default: all), or 'status'")
    parser.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a param, e.g. train.epochs=5 "
                        "(repeatable; the value is read as YAML)")
    parser.add_argument("--force", action="store_true", help="run the named stages even if up to date")
    parser.add_argument("--from", dest="start", metavar="STAGE",
                        help="run this stage and every stage after it, those that are stale "
                        "(with --force, all of them)")
    parser.add_argument("--kaggle", metavar="MESSAGE",
                        help="after the run, upload submission.csv to the Kaggle competition "
                        "with this message (needs the kaggle command)")
    parser.add_argument("--quiet", action="store_true", help="print only warnings and errors")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    return parser.parse_args(argv)


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


def summarize(params: dict) -> None:
    """The closing lines: validation accuracy and where the submission is, each
    flagged when the step that wrote it is behind the params and data."""
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

    if metrics.exists():
        scores = artifacts.load_json(metrics)
        if scores.get("val_accuracy") is not None:
            held_out = "" if scores.get("val_held_out", True) else predict.NOT_HELD_OUT
            log.info("validation accuracy: %.2f%%%s%s", 100 * scores["val_accuracy"],
                     held_out, behind("predict"))
    if submission.exists():
        log.info("submission: %s%s", submission, behind("submit"))


def upload_if_current(params: dict, message: str) -> None:
    """Upload submission.csv, unless a step it is made from is out of date."""
    late = [f"{name} ({st.describe()})" for name, st in runner.status(params)
            if name != "report" and st.state == "stale"]
    if late:
        raise PipelineError(f"not uploading: the submission is not up to date with the params "
                            f"and data: {'; '.join(late)}. Run `python run.py` first")
    kaggle.upload(stages.submission_path(params), message)


def predict_images(params: dict, paths: list[str]) -> int:
    """`predict-image PATH...`: print each image's three likeliest digits."""
    from pipeline import image     # Pillow is loaded only for this command
    if not paths:
        raise PipelineError("predict-image: expected one or more image paths (PNG or JPEG)")
    model = stages.artifact(params, "train", "model.npz")
    failed = False
    for path, top in zip(paths, image.classify(model, [Path(p) for p in paths],
                                               params["predict.batch_size"])):
        if isinstance(top, PipelineError):
            print(f"error: {top}", file=sys.stderr, flush=True)
            failed = True
        else:
            print(image.describe(path, top), flush=True)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status (0, 1 on an error, 130 on Ctrl-C)."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    setup_logging(args.quiet)
    try:
        params = params_mod.load(args.params, args.overrides)
        if args.targets[:1] == ["status"]:
            if args.targets[1:] or args.start:
                raise PipelineError("status takes no stage names: it reports every step")
            print_status(params)
            return 0
        if args.start and args.targets:
            raise PipelineError(f"give stage names or --from {args.start}, not both")
        if args.targets[:1] == ["predict-image"]:
            return predict_images(params, args.targets[1:])
        steps = runner.select(args.targets, args.start)
        if any(s.stage == "ingest" for s in steps):
            kaggle.offer_download(params["data.train"], params["data.test"])
        train_csv, test_csv, sample = ingest.resolve_data(
            params["data.train"], params["data.test"], params["data.sample"])
        if sample and any(s.stage == "ingest" for s in steps):
            log.warning("%s and %s not found: using the bundled sample in %s. For the "
                        "competition's data see README.md (Getting the data).",
                        params["data.train"], params["data.test"], params["data.sample"])
            # The long hint only when the sample is read, not on every later run.
            if args.force or any(runner.Runner(params).check(s).state != "up to date"
                                 for s in steps if s.stage == "ingest"):
                log.info(kaggle.download_hint(Path(params["data.train"])))
        if args.kaggle is None:
            runner.run(params, steps, force=args.force)
        else:
            # Upload once submit is done: a failing report must not hold it back.
            report = [s for s in steps if s.stage == "report"]
            runner.run(params, [s for s in steps if s not in report], force=args.force)
            upload_if_current(params, args.kaggle)
            runner.run(params, report, force=args.force)
        summarize(params)
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
        print("interrupted: completed outputs are kept; run again to resume", file=sys.stderr)
        return 130
