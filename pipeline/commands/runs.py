"""The commands over the runs log and the run cache: `runs` (the table), `restore N`
(a run's model and submission back in place), `submit --kaggle` (the last run's
submission uploaded as it is) and `cache` (its size, or clear it)."""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from pathlib import Path

import yaml

from pipeline import artifacts
from pipeline.commands import blend as blend_mod
from pipeline.commands import closing
from pipeline.commands.closing import options, summarize, upload_if_current
from pipeline.config import params as params_mod
from pipeline.engine import cache, journal, runner
from pipeline.engine.journal import Journal
from pipeline.errors import PipelineError
from pipeline.report import runs_table
from pipeline.steps import graph

log = logging.getLogger(__name__)


def print_runs(params: dict, as_csv: bool, wide: bool = False) -> None:
    """`runs`: the runs log as a table (or CSV), newest last; 120 characters wide at
    most, unless `wide`."""
    rows = runs_table.load_table(params["outputs"])
    if as_csv:
        sys.stdout.write(runs_table.format_csv(rows))
    elif not rows:
        print(f"no runs in {runs_table.log_path(params['outputs'])} yet: each run that "
              "changes an output adds one")
    else:
        sys.stdout.write(runs_table.format_table(rows, None if wide else runs_table.WIDTH))


def logged_run(params: dict, command: str, number: int) -> dict:
    """Run `number` (from 1) of the outputs folder's runs log; a PipelineError that
    says which runs there are, for `command`, when there is no such run."""
    path = runs_table.log_path(params["outputs"])
    found = runs_table.logged_runs(params["outputs"])
    if not 1 <= number <= len(found):
        have = f"runs 1-{len(found)}" if found else "no runs yet"
        raise PipelineError(f"{command}: no run {number} in {path} ({have}; `python run.py "
                            "runs` lists them)")
    return found[number - 1]


def note(params: dict, words: list[str]) -> None:
    """`note N TEXT`: add a note to run N (a leaderboard score, a thought), shown in
    the table's note column."""
    if len(words) < 2 or not words[0].isdigit() or not " ".join(words[1:]).strip():
        raise PipelineError('note: expected a run number and a text, such as `python run.py '
                            'note 3 "public LB 0.99321"`')
    number = int(words[0])
    logged_run(params, "note", number)                  # there is such a run
    text = " ".join(words[1:]).strip()
    journal.log_note(params["outputs"], number, text)
    print(f"note on run {number}: {text}")


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
                               local=Path(params_file).with_name(params_mod.LOCAL))
    except PipelineError:
        params_file = args.params
        base = params_mod.load(params_file, args.overrides,
                               local=Path(params_file).with_name(params_mod.LOCAL))
    flags = {k: v for k, v in wanted.items() if k != "outputs" and base[k] != v}
    kept = [o for o in args.overrides if params_mod.parse_override(o)[0] not in flags]
    return options(params_file, kept, [f"{k}={_yaml(v)}" for k, v in flags.items()])


def check_model(run: dict, wanted: dict, retrain: str) -> None:
    """Refuse, before anything is written, unless run N's model (its hash in the runs
    log) is in place or in the run cache: an entry that is gone, or that a forced
    retrain with the same settings replaced by another model, is said so."""
    number, logged = run["run"], run.get("model")
    train = next(s for s in graph.STEPS if s.name == "train")
    model = graph.artifact(wanted, "train", "model.npz")
    if runner.Runner(wanted).check(train).state == "up to date":
        found = artifacts.file_hash(model)
        if logged and found != logged:
            raise PipelineError(
                f"run {number} cannot be restored: the model in place has its settings but "
                f"is another model ({found[:12]}, not {logged[:12]}: retrained with --force "
                f"since), and the run cache keeps one model per setting; {retrain}")
        return
    files = cache.load(wanted["outputs"], "train", str(run.get("key")), train.outs(wanted))
    if files is None:
        raise PipelineError(f"run {number} cannot be restored: its model is no longer in the "
                            f"run cache (evicted beyond cache.max_mb, cleared or damaged); "
                            f"{retrain}")
    found = hashlib.sha256(files["model"]).hexdigest()
    if logged and found != logged:
        raise PipelineError(
            f"run {number} cannot be restored: its run cache entry now holds another model "
            f"({found[:12]}, not {logged[:12]}: a retrain with the same settings, --force, "
            f"replaced it); {retrain}")


def restore(args: argparse.Namespace, params: dict, sample: bool) -> None:
    """`restore N`: run the pipeline with run N's params, train only from the run
    cache, then upload with --kaggle; the closing lines name those params."""
    words = args.targets[1:]
    if len(words) != 1 or not words[0].isdigit():
        raise PipelineError("restore: expected one run number, such as `python run.py "
                            "restore 3` (`python run.py runs` lists them)")
    number, path = int(words[0]), runs_table.log_path(params["outputs"])
    run = logged_run(params, "restore", number)
    if run.get("event") == "blend":
        raise PipelineError(f"restore: run {number} is a blend of runs "
                            f"{', '.join(map(str, run.get('runs', [])))}: `python run.py blend "
                            f"{' '.join(map(str, run.get('runs', [])))}` makes it again")
    # The log is a file like any other: its params are checked as a params file's are.
    logged = run.get("params") if isinstance(run.get("params"), dict) else {}
    where = f"{path}, run {number}"
    wanted = params_mod.validate({k: logged.get(k, params[k]) for k in params_mod.SCHEMA},
                                 {k: f"{where}, params" for k in params_mod.SCHEMA})
    wanted["outputs"] = params["outputs"]              # where its log is: this folder
    params_file = run.get("params_file")
    if not isinstance(params_file, str) or not params_file:
        params_file = args.params
    again = rerun_options(args, params_file, wanted)
    retrain = f"retrain it with `{f'python run.py {again}'.strip()}`"
    check_model(run, wanted, retrain)
    changed = run.get("changed") if isinstance(run.get("changed"), dict) else {}
    writer = Journal(params_file, changed)
    try:
        runner.run(wanted, list(graph.STEPS), journal=writer, retrain=False)
    except runner.NotCached:
        raise PipelineError(f"run {number} cannot be restored: the code or the data changed "
                            f"since it ran, so the run cache has no model for it; "
                            f"{retrain}") from None
    model, submission = graph.artifact(wanted, "train", "model.npz"), graph.submission_path(wanted)
    if run.get("model") and artifacts.file_hash(model) != run["model"]:
        raise PipelineError(f"run {number} was not restored: {model} is not its model "
                            f"({artifacts.file_hash(model)[:12]}, not {run['model'][:12]}); "
                            f"{retrain}")
    if run.get("submission") and submission.exists() \
            and artifacts.file_hash(submission) != run["submission"]:
        log.warning("run %d's model is back, but %s is not the submission it made (%s, not "
                    "%s): the code or the data after train changed since", number, submission,
                    artifacts.file_hash(submission)[:10], run["submission"][:10])
    log.info("restored run %d: %s and %s", number, model, submission)
    if args.kaggle is not None:
        upload_if_current(wanted, args.kaggle, sample)
    summarize(wanted, sample, again)


# Params that say where things are, not how a submission is made.
LOCATIONS = ("outputs", "data.train", "data.test", "data.sample", "cache.max_mb")


def upload_last_run(args: argparse.Namespace, params: dict, sample: bool) -> bool:
    """`submit --kaggle MESSAGE`: upload the submission the last run left, naming that
    run, never one rebuilt from the params file: the steps up to submit are brought up
    to date with the last run's params (nothing runs when it finished), train only from
    the run cache. Refuses when this command line's --params or --set ask for other
    params than that run's. Returns False on the bundled sample or when the log holds no
    run: the caller then runs the stages as for any other --kaggle (and refuses to
    upload the sample's submission)."""
    if sample:
        return False
    found = runs_table.logged_runs(params["outputs"])
    if not found:
        return False
    run = found[-1]
    number = run["run"]
    if run.get("event") == "blend":
        path = blend_mod.submission_path(params)
        if not path.exists() or artifacts.file_hash(path) != run.get("submission"):
            raise PipelineError(f"not uploading: the last run, {number}, is a blend, and {path} "
                                f"is no longer its submission; run `python run.py blend "
                                f"{' '.join(map(str, run.get('runs', [])))}` again")
        closing.upload(params, args.kaggle, path)
        return True
    wanted = {k: run.get("params", {}).get(k, params[k]) for k in params_mod.SCHEMA}
    wanted["outputs"] = params["outputs"]
    asked = {params_mod.parse_override(o)[0] for o in args.overrides}
    if args.params != params_mod.DEFAULTS:
        asked |= set(params_mod.differences(params_mod.PROJECT_DEFAULTS, params))
    other = [k for k in params_mod.SCHEMA
             if k in asked and k not in LOCATIONS and wanted[k] != params[k]]
    if other:
        differ = ", ".join(f"{k}={_yaml(params[k])} (run {number}: {_yaml(wanted[k])})"
                           for k in other)
        again = f"python run.py {closing.options(args.params, args.overrides)}".strip()
        raise PipelineError(
            f"not uploading: `submit --kaggle` uploads the submission the last run left, "
            f"run {number}'s, and this command line asks for other params: {differ}. To make "
            f"a submission with them and upload it: `{again} --kaggle \"message\"`")
    writer = Journal(run.get("params_file") or args.params, run.get("changed", {}))
    try:
        runner.run(wanted, runner.select(["submit"], None), journal=writer, retrain=False)
    except runner.NotCached:
        raise PipelineError(
            f"not uploading: run {number}'s submission is not in place and its model is no "
            f"longer in the run cache; `python run.py restore {number}` says how to get it "
            "back") from None
    closing.upload_if_current(wanted, args.kaggle, sample)
    return True
