"""The command line: parse arguments, load params, hand over to the runner."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import yaml

from pipeline import artifacts
from pipeline.commands import kaggle
from pipeline.config import params as params_mod
from pipeline.engine import cache, experiments, runner
from pipeline.errors import PipelineError
from pipeline.steps import graph as stages
from pipeline.steps import ingest, predict

log = logging.getLogger("pipeline")

DEFAULT_PARAMS = params_mod.DEFAULTS

USAGE_EPILOG = f"""\
stages, in order: {' -> '.join(stages.STAGES)}
commands: status (what is up to date, what is stale and why)
          predict-image PATH...  (the top 3 classes of your own digit images)
          runs [--csv]  (the runs so far: params that changed, accuracy, submission)
          restore N  (run N's model and submission back in place, from the run cache)
          cache [clear]  (the run cache's size, or empty it)

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
    parser.add_argument("--csv", action="store_true",
                        help="runs: print the table as CSV, for a spreadsheet")
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


def print_status(params: dict) -> None:
    """One line per step: up to date, stale (and why), or never run."""
    rows = runner.status(params)
    width = max(len(name) for name, _ in rows)
    for name, st in rows:
        print(f"{name:<{width}}  {st.describe()}")


LOCAL_PARAMS = "params.local.yaml"     # beside the params file: one machine's settings
UPLOAD = 'python run.py submit --kaggle "your message"'


def sample_outputs(params: dict) -> bool:
    """Whether the run uses the bundled sample (neither data file is found); its
    outputs then go to <outputs>/sample, so that a demo never replaces, or mixes
    with, outputs made from the competition's data."""
    *_, sample = ingest.resolve_data(params["data.train"], params["data.test"],
                                     params["data.sample"])
    if sample:
        params["outputs"] = str(Path(params["outputs"]) / "sample")
    return sample


def options(params_file: str, overrides: list[str], flags: list[str] = ()) -> str:
    """--params and --set options as shell words: those of a command line, plus
    `flags` (KEY=VALUE) after them, which override them."""
    words = [] if params_file == DEFAULT_PARAMS else ["--params", params_file]
    for override in [*overrides, *flags]:
        words += ["--set", override]
    return kaggle.shell(words)


def summarize(params: dict, sample: bool, again: str = "") -> None:
    """The closing lines: validation accuracy, the submission, the report and what
    to do next; each flagged when the step that wrote it is behind the params and
    data, and, after a run on the bundled sample, marked as a demo. `again` holds
    the --params and --set options the upload command needs to find the same files."""
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
        log.info("next: upload it with `%s`", f"{UPLOAD} {again}".strip())


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
    from pipeline.commands import image  # Pillow is loaded only for this command
    if not paths:
        raise PipelineError("predict-image: expected one or more image paths (PNG or JPEG)")
    model = stages.artifact(params, "train", "model.npz")
    nets = image.load_model(model)
    scores = stages.artifact(params, "train", "metrics.json")
    accuracy = artifacts.load_json(scores).get("val_accuracy") if scores.exists() else None
    tta = params["predict.tta_shift"]
    print(f"model: {model} ({len(nets)} network{'s' if len(nets) > 1 else ''}"
          + (f", validation accuracy {100 * accuracy:.2f}%" if accuracy else "")
          + (" without test-time augmentation; classifying with it)" if tta and accuracy
             else ")"), flush=True)
    prepared = image.prepare_files([Path(p) for p in paths])
    failed = False
    tops = image.top_classes(nets, prepared, params["predict.batch_size"], tta_shift=tta)
    for path, top in zip(paths, tops):
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


def print_runs(params: dict, as_csv: bool) -> None:
    """`runs`: the runs log as a table (or CSV), newest last."""
    rows = experiments.load_table(params["outputs"])
    if as_csv:
        sys.stdout.write(experiments.format_csv(rows))
    elif not rows:
        print(f"no runs in {experiments.log_path(params['outputs'])} yet: each run that "
              "trains adds one")
    else:
        sys.stdout.write(experiments.format_table(rows))


def cache_command(params: dict, words: list[str]) -> None:
    """`cache`: what the run cache holds; `cache clear`: empty it."""
    where = cache.folder(params["outputs"])
    if words == ["clear"]:
        count, held = cache.clear(params["outputs"])
        print(f"cache: removed {count} entr{'y' if count == 1 else 'ies'} "
              f"({held / cache.MB:.1f} MB) from {where}")
    elif not words:
        found = cache.entries(params["outputs"])
        held = sum(cache.size(e) for e in found)
        print(f"cache: {len(found)} entr{'y' if len(found) == 1 else 'ies'}, "
              f"{held / cache.MB:.1f} MB of {params['cache.max_mb']:g} (cache.max_mb) in {where}")
    else:
        raise PipelineError(f"cache: expected `python run.py cache` or `python run.py cache "
                            f"clear`, found {' '.join(words)!r}")


def _yaml(value) -> str:
    """A param's value as --set reads it back (as YAML)."""
    if isinstance(value, str) and yaml.safe_load(value) == value:
        return value
    return json.dumps(value)


def rerun_options(args: argparse.Namespace, params_file: str, wanted: dict) -> str:
    """The --params and --set options that make the params `wanted` (the outputs
    folder aside): `params_file` (or, when it is gone, this command's), this command's
    --set, and one --set for each param that still differs."""
    try:
        base = params_mod.load(params_file, args.overrides,
                               local=Path(params_file).with_name(LOCAL_PARAMS))
    except PipelineError:
        params_file = args.params
        base = params_mod.load(params_file, args.overrides,
                               local=Path(params_file).with_name(LOCAL_PARAMS))
    flags = {k: v for k, v in wanted.items() if k != "outputs" and base[k] != v}
    kept = [o for o in args.overrides if params_mod.parse_override(o)[0] not in flags]
    return options(params_file, kept, [f"{k}={_yaml(v)}" for k, v in flags.items()])


def restore(args: argparse.Namespace, params: dict, sample: bool) -> None:
    """`restore N`: run the pipeline with run N's params, train only from the run
    cache, then upload with --kaggle; the closing lines name those params."""
    words = args.targets[1:]
    if len(words) != 1 or not words[0].isdigit():
        raise PipelineError("restore: expected one run number, such as `python run.py "
                            "restore 3` (`python run.py runs` lists them)")
    number, path = int(words[0]), experiments.log_path(params["outputs"])
    found = experiments.runs(experiments.read(path))
    if not 1 <= number <= len(found):
        have = f"runs 1-{len(found)}" if found else "no runs yet"
        raise PipelineError(f"restore: no run {number} in {path} ({have}; `python run.py "
                            "runs` lists them)")
    run = found[number - 1]
    wanted = {k: run.get("params", {}).get(k, params[k]) for k in params_mod.SCHEMA}
    wanted["outputs"] = params["outputs"]              # where its log is: this folder
    params_file = run.get("params_file") or args.params
    again = rerun_options(args, params_file, wanted)
    retrain = f"retrain it with `{f'python run.py {again}'.strip()}`"
    train = next(s for s in stages.STEPS if s.name == "train")
    if (runner.Runner(wanted).check(train).state != "up to date"
            and cache.load(wanted["outputs"], "train", str(run.get("key")),
                           train.outs(wanted)) is None):
        raise PipelineError(f"run {number} cannot be restored: its model is no longer in the "
                            f"run cache (evicted beyond cache.max_mb, cleared or damaged); "
                            f"{retrain}")
    journal = experiments.Journal(params_file, run.get("changed", {}))
    try:
        runner.run(wanted, list(stages.STEPS), journal=journal, retrain=False)
    except runner.NotCached:
        raise PipelineError(f"run {number} cannot be restored: the code or the data changed "
                            f"since it ran, so the run cache has no model for it; "
                            f"{retrain}") from None
    log.info("restored run %d: %s and %s", number, stages.artifact(wanted, "train", "model.npz"),
             stages.submission_path(wanted))
    if args.kaggle is not None:
        upload_if_current(wanted, args.kaggle, sample)
    summarize(wanted, sample, again)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status (0, 1 on an error, 130 on Ctrl-C)."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    setup_logging(args.quiet, sys.stderr if args.csv else None)   # stdout holds the CSV
    try:
        params = params_mod.load(args.params, args.overrides,
                                 local=Path(args.params).with_name(LOCAL_PARAMS))
        journal = experiments.Journal(args.params, params_mod.differences(args.params, params))
        outputs = params["outputs"]
        sample = sample_outputs(params)
        command = args.targets[0] if args.targets else None
        if args.csv and command != "runs":
            raise PipelineError("--csv is for `python run.py runs --csv`")
        if command in ("runs", "cache", "restore") and args.start:
            raise PipelineError(f"{command} takes no --from: `python run.py "
                                f"{runner.COMMANDS[command]}`")
        if command == "runs":
            if args.targets[1:]:
                raise PipelineError("runs takes no stage names: it lists every run")
            print_runs(params, args.csv)
            return 0
        if command == "cache":
            cache_command(params, args.targets[1:])
            return 0
        if command == "restore":
            restore(args, params, sample)
            return 0
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
        if any(s.stage == "ingest" for s in planned) and kaggle.offer_download(
                params["data.train"], params["data.test"]) and sample:
            # The files were just downloaded: the run is on them, not on the sample.
            params["outputs"], sample = outputs, False
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
            runner.run(params, steps, force=args.force, single=args.single, journal=journal)
        else:
            # Upload once submit is done: a failing report must not hold it back.
            report = [s for s in steps if s.stage == "report"]
            runner.run(params, [s for s in steps if s not in report], force=args.force,
                       single=args.single, journal=journal)
            upload_if_current(params, args.kaggle, sample)
            runner.run(params, report, force=args.force, single=args.single)
        summarize(params, sample, options(args.params, args.overrides))
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
