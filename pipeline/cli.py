"""The command line: parse arguments, load params, then run the stages or one of the
commands that are not stages (COMMANDS, the one place their names live)."""
from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pipeline.commands import blend, closing, kaggle, runs
from pipeline.config import params as params_mod
from pipeline.engine import lock, runner
from pipeline.engine.journal import Journal
from pipeline.errors import PipelineError
from pipeline.steps import graph, ingest

log = logging.getLogger("pipeline")

DEFAULT_PARAMS = params_mod.DEFAULTS
LOCAL_PARAMS = params_mod.LOCAL       # beside the params file: one machine's settings


@dataclass(frozen=True)
class Command:
    """A command that is not a stage: `python run.py USAGE`."""

    usage: str                                          # "restore N"
    about: str                                          # one line for --help
    run: Callable[[argparse.Namespace, dict, bool], int]   # (args, params, sample) -> status
    # Given the words after the command: whether it writes the outputs folder, and so
    # holds its lock (engine/lock.py).
    writes: Callable[[list[str]], bool] = lambda words: False


def _no_from(args: argparse.Namespace) -> None:
    if args.start:
        command = args.targets[0]
        raise PipelineError(f"{command} takes no --from: `python run.py "
                            f"{COMMANDS[command].usage}`")


def _status(args: argparse.Namespace, params: dict, sample: bool) -> int:
    if args.targets[1:] or args.start:
        raise PipelineError("status takes no stage names: it reports every step")
    print_status(params, sample)
    return 0


def _predict_image(args: argparse.Namespace, params: dict, sample: bool) -> int:
    if args.start:
        raise PipelineError(f"give stage names or --from {args.start}, not both")
    from pipeline.commands import (
        predict_image,  # Pillow is loaded only for this command
    )
    return predict_image.run(params, args.targets[1:], args.show)


def _runs(args: argparse.Namespace, params: dict, sample: bool) -> int:
    _no_from(args)
    if args.targets[1:]:
        raise PipelineError("runs takes no stage names: it lists every run")
    runs.print_runs(params, args.csv, args.wide)
    return 0


def _restore(args: argparse.Namespace, params: dict, sample: bool) -> int:
    _no_from(args)
    runs.restore(args, params, sample)
    return 0


def _note(args: argparse.Namespace, params: dict, sample: bool) -> int:
    _no_from(args)
    runs.note(params, args.targets[1:])
    return 0


def _blend(args: argparse.Namespace, params: dict, sample: bool) -> int:
    _no_from(args)
    path = blend.blend(params, args.targets[1:])
    if args.kaggle is not None:
        closing.refuse_sample(sample)
        closing.upload(params, args.kaggle, path)
    return 0


def _cache(args: argparse.Namespace, params: dict, sample: bool) -> int:
    _no_from(args)
    runs.cache_command(params, args.targets[1:])
    return 0


COMMANDS = {
    "status": Command("status", "what is up to date, what is stale and why", _status),
    "predict-image": Command("predict-image PATH...",
                             "the top 3 classes of your own digit images", _predict_image),
    "runs": Command("runs [--csv] [--wide]",
                    "the runs so far: params that changed, accuracy, submission", _runs),
    "restore": Command("restore N",
                       "run N's model and submission back in place, from the run cache",
                       _restore, writes=lambda words: True),
    "note": Command('note N "TEXT"', "a note on run N, such as a leaderboard score, shown in runs",
                    _note, writes=lambda words: True),
    "blend": Command("blend N M ...", "average runs' probabilities into a submission, from "
                     "the run cache", _blend, writes=lambda words: True),
    "cache": Command("cache [clear]", "the run cache's size, or empty it", _cache,
                     writes=lambda words: words == ["clear"]),
}
USAGES = {name: command.usage for name, command in COMMANDS.items()}

USAGE_EPILOG = f"""\
stages, in order: {' -> '.join(graph.STAGES)}
commands: """ + "\n          ".join(f"{c.usage}  ({c.about})" for c in COMMANDS.values()) + """

examples:
  python run.py                          run what is out of date
  python run.py train                    train, after what it needs (as make, dvc repro)
  python run.py train --single           train alone, refusing a stale upstream
  python run.py --set train.epochs=5     override a param for this run
  python run.py --from preprocess        that stage and every later one, if stale
  python run.py submit --kaggle "first"  make submission.csv and upload it to Kaggle
  python run.py predict-image seven.png  classify a PNG or JPEG of a digit
  python run.py runs                     compare the runs so far; the best is marked *
  python run.py restore 3                go back to run 3 without training again
"""


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line's stages, options and overrides."""
    parser = argparse.ArgumentParser(
        prog="run.py", description="Kaggle Digit Recognizer: CSVs -> submission.csv.",
        epilog=USAGE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("targets", nargs="*", metavar="STAGE",
                        help="stages to bring up to date, with what they are made from "
                        "(default: all), or 'status'")
    parser.add_argument("--params", default=DEFAULT_PARAMS,
                        help="params file (default: %(default)s); another file lists only "
                        "what it changes over %(default)s")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a param, e.g. train.epochs=5 "
                        "(repeatable; the value is read as YAML)")
    parser.add_argument("--force", action="store_true",
                        help="run the named stages even if up to date; what they are made "
                        "from still runs only if stale")
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
    parser.add_argument("--csv", action="store_true",
                        help="runs: print the table as CSV, for a spreadsheet")
    parser.add_argument("--wide", action="store_true",
                        help="runs: every column, however wide (by default the table fits "
                        "120 characters)")
    parser.add_argument("--quiet", action="store_true", help="print only warnings and errors")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    return parser.parse_intermixed_args(argv)    # options may follow the paths, or precede them


class _Format(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        return f"warning: {text}" if record.levelno >= logging.WARNING else text


def setup_logging(quiet: bool, stream=None) -> None:
    """Plain lines on stdout (or `stream`) from the "pipeline" logger; warnings only
    when quiet."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(_Format())
    log.handlers[:] = [handler]
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    log.propagate = False


def print_status(params: dict, sample: bool = False) -> None:
    """Which data the outputs are made from, then one line per step: up to date,
    stale (and why, and whether the run cache has its result), or never run."""
    if sample:
        print(f"data: the bundled sample in {params['data.sample']} (a demo; outputs in "
              f"{params['outputs']})")
    else:
        print(f"data: {params['data.train']} and {params['data.test']} (outputs in "
              f"{params['outputs']})")
    rows = runner.status(params)
    fresh, pending = runner.Runner(params), set()
    width = max(len(name) for name, _ in rows)
    for name, st in rows:
        step = next(s for s in runner.STEPS if s.name == name)
        text = st.describe()
        late = any(u.name in pending for u in runner.upstream(params, step))
        if st.state != "up to date" and not late and fresh.in_cache(step):
            text += " (its result is in the run cache: restored, not run again)"
        if st.state != "up to date" or late:
            pending.add(name)
        print(f"{name:<{width}}  {text}")


def sample_outputs(params: dict) -> bool:
    """Whether the run uses the bundled sample (neither data file is found); its
    outputs then go to <outputs>/sample, so that a demo never replaces, or mixes
    with, outputs made from the competition's data."""
    *_, sample = ingest.resolve_data(params["data.train"], params["data.test"],
                                     params["data.sample"])
    if sample:
        params["outputs"] = str(Path(params["outputs"]) / "sample")
    return sample


def run_stages(args: argparse.Namespace, params: dict, journal: Journal,
               sample: bool, outputs: str) -> int:
    """Bring the named stages (all by default) up to date, upload with --kaggle, and
    end with the closing lines. `outputs`: the outputs folder the params name (a run
    on the sample writes below it)."""
    if args.start and args.targets:
        raise PipelineError(f"give stage names or --from {args.start}, not both")
    if (args.kaggle is not None and args.targets == ["submit"] and not args.force
            and runs.upload_last_run(args, params, sample)):
        return 0
    steps = runner.select(args.targets, args.start, USAGES)
    planned = runner.plan(params, steps, args.single)
    ingesting = any(s.stage == "ingest" for s in planned)
    if ingesting and kaggle.offer_download(params["data.train"], params["data.test"]) \
            and sample:
        # The files were just downloaded: the run is on them, not on the sample.
        params["outputs"], sample = outputs, False
    if sample and ingesting:
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
        runner.run(params, steps, force=args.force, single=args.single, journal=journal)
    else:
        # Upload once submit is done: a failing report must not hold it back.
        report = [s for s in steps if s.stage == "report"]
        runner.run(params, [s for s in steps if s not in report], force=args.force,
                   single=args.single, journal=journal)
        closing.upload_if_current(params, args.kaggle, sample)
        runner.run(params, report, force=args.force, single=args.single)
    closing.summarize(params, sample, closing.options(args.params, args.overrides))
    return 0


def dispatch(args: argparse.Namespace) -> int:
    """Load the params, then run the command named first, or the stages."""
    params = params_mod.load(args.params, args.overrides,
                             local=Path(args.params).with_name(LOCAL_PARAMS))
    journal = Journal(args.params, params_mod.differences(args.params, params))
    outputs = params["outputs"]
    sample = sample_outputs(params)
    command = args.targets[0] if args.targets else None
    for flag in ("csv", "wide"):
        if getattr(args, flag) and command != "runs":
            raise PipelineError(f"--{flag} is for `python run.py runs --{flag}`")
    if command in COMMANDS and not COMMANDS[command].writes(args.targets[1:]):
        return COMMANDS[command].run(args, params, sample)
    # The folder written (<outputs>/sample for a run on the sample): ours, or refused
    # before a file is made there; then one run at a time writes it.
    runner.claim_outputs(Path(params["outputs"]))
    with lock.held(params["outputs"]):
        if command in COMMANDS:
            return COMMANDS[command].run(args, params, sample)
        return run_stages(args, params, journal, sample, outputs)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status (0, 1 on an error, 130 on Ctrl-C)."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    setup_logging(args.quiet, sys.stderr if args.csv else None)   # stdout holds the CSV
    try:
        return dispatch(args)
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
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            print(f"error: {where}disk full: free some space, or set outputs to a folder on "
                  "another disk; the outputs already there are intact", file=sys.stderr)
        else:
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
