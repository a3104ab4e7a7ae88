"""``autosrh-ray`` command line: ``run`` (the whole workflow), ``prepare`` (the data stage), ``compare`` (several
dimension methods × seeds on the same data), ``generate`` (the synthetic dataset as raw Criteo-format shards, for
scale tests), ``predict`` (score raw rows with a finished run's model) and ``config --list`` (every config key)."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

from .config import ConfigError, load_config
from .methods.registry import BUILT_IN as METHODS
from .report.schema import ModelEntry, Report
from .supervise import StallError


def _parser() -> argparse.ArgumentParser:
    # plain text for --help (the module docstring is reStructuredText)
    description = ("AutoSrh embedding-dimension search as a Ray workflow. run: the whole workflow (prepare, search, "
                   "prune, retrain, evaluate); prepare: the data stage; compare: several dimension methods x seeds "
                   "on the same data; generate: the synthetic dataset as Criteo-format shards; predict: score rows "
                   "with a finished run's model; config: every config key.")
    epilog = "autosrh-ray COMMAND --help describes each command."
    parser = argparse.ArgumentParser(prog="autosrh-ray", description=description, epilog=epilog)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_run_and_prepare, _add_compare, _add_predict, _add_config, _add_generate):
        add(sub)
    return parser


def _set_help(example: str, scope: str = "") -> str:
    return f"override a config key{scope} (value parsed as YAML); repeatable, e.g. --set {example}"


def _add_run_and_prepare(sub) -> None:
    commands = (
        ("run", "prepare → search → prune → retrain → evaluate; writes DIR/report.json",
         "Run the whole workflow of a YAML config: prepare the data, search (or a Ray Tune study), prune to every "
         "budget, retrain, evaluate on the test split; writes report.json, report.md, plots and the compact "
         "models under --output. Re-running into the same output resumes finished stages."),
        ("prepare", "the data stage alone",
         "Read, split, count and encode the data of a YAML config into Parquet shards under --output (what run "
         "does first; a later run with the same config reuses it)."),
    )
    for name, help_text, description in commands:
        p = sub.add_parser(name, help=help_text, description=description)
        p.add_argument("config", help="workflow YAML")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="dotted.key=value",
                       help=_set_help("prune.cr=20"))
        p.add_argument("--output", help="output directory or URI, e.g. s3://bucket/runs/x (default runs/<config stem>)")
    sub.choices["run"].add_argument("--fresh", action="store_true",
                                    help="start over instead of resuming the finished stages and trials of an "
                                         "earlier run into the same output")


def _add_compare(sub) -> None:
    comp = sub.add_parser("compare", help="run several dimension methods × seeds on the same data; writes "
                                          "DIR/comparison.json, comparison.md and comparison.png",
                          description="Run every method of --methods with --seeds seeds on the same prepared data, "
                                      "splits, backbone and stopping rule (each an ordinary run under "
                                      "OUTPUT/<method>/seed<k>; a re-run reads finished runs back) and write "
                                      "comparison.json, comparison.md and comparison.png.")
    comp.add_argument("config", help="workflow YAML (its search.method is replaced by each of --methods)")
    comp.add_argument("--set", dest="overrides", action="append", default=[], metavar="dotted.key=value",
                      help=_set_help("ray.num_workers=0 (small data: train in process)", " for every run"))
    comp.add_argument("--methods", default=",".join(METHODS),
                      help="comma-separated search.method values, built-in or package.module:NAME (default: every "
                           "built-in)")
    comp.add_argument("--seeds", type=int, default=3, help="runs per method, train.seed + 0, 1, … (default 3)")
    comp.add_argument("--output", required=True, help="directory for the comparison and every run")


def _add_predict(sub) -> None:
    pred = sub.add_parser("predict", help="score raw rows (the dataset's own format) with a finished run's model",
                          description="Score rows with a finished run's compact model: rows in the run's dataset "
                                      "format (a synthetic run: the Criteo dac rows autosrh-ray generate writes), "
                                      "with or without the label column, parsed and encoded as in training. "
                                      "Prints the rows scored and skipped and, per field, values the model has "
                                      "not seen (out-of-vocabulary values; numerical values far outside the "
                                      "training range as a warning).")
    pred.add_argument("--model", required=True, help="the run's output directory, a model folder in it, or a model.pt")
    pred.add_argument("--input", required=True, help="rows to score: a file, a directory of shards or a glob")
    pred.add_argument("--output", required=True,
                      help="scores: .parquet, or .csv (position, label when the rows have one, score per row)")
    pred.add_argument("--batch-size", type=int, default=8192,
                      help="rows scored at a time (memory: rows × fields × K floats)")
    pred.add_argument("--ray", action="store_true",
                      help="score input chunks as Ray Data tasks side by side (big inputs); --output is then a "
                           "directory or URI of Parquet parts")
    pred.add_argument("--address", default="local", help="with --ray: the Ray to use (local, auto or an address)")


def _add_config(sub) -> None:
    conf = sub.add_parser("config", help="the configuration reference: every key, its default and meaning",
                          description="Print every config key with its default, allowed values and meaning "
                                      "(Markdown, as docs/config.md).")
    conf.add_argument("--list", action="store_true",
                      help="the same as no option: print the whole reference (kept for scripts that pass it)")


def _add_generate(sub) -> None:
    gen = sub.add_parser("generate", help="write the synthetic dataset as Criteo dac text shards",
                         description="Write the synthetic dataset of a YAML config, in Criteo's shape (13 "
                                     "numerical, 26 categorical fields; the config's vocabulary, signal fields "
                                     "and seed), as Criteo dac text: label, I1-I13, C1-C26, tab-separated. Data "
                                     "at any scale for dataset.name: criteo, or new rows to score with a "
                                     "synthetic run's model (autosrh-ray predict reads its fields' columns). "
                                     "With the word criteo instead of a config: Criteo Kaggle's profile (each "
                                     "categorical field's distinct count at 45M rows, heavy-tailed, about 25% "
                                     "positives, planted signal).")
    gen.add_argument("config", help="workflow YAML (its dataset.synthetic section shapes the data), or criteo: "
                                    "the Criteo-profile data (autosrh_ray/data/criteo_profile.py)")
    gen.add_argument("--set", dest="overrides", action="append", default=[], metavar="dotted.key=value",
                     help=_set_help("dataset.synthetic.vocab_size=100000", " of the synthetic dataset"))
    gen.add_argument("--rows", type=int, required=True, help="rows in all")
    gen.add_argument("--shards", type=int, default=1,
                     help="files to split the rows into, part-00000.txt … (default 1; concatenated, they hold "
                          "the same rows for any count)")
    gen.add_argument("--gzip", action="store_true", help="write gzip-compressed shards (part-*.txt.gz)")
    gen.add_argument("--output", required=True, help="directory for part-*.txt[.gz]")
    gen.add_argument("--processes", type=int, default=None,
                     help="shards written at once, one process each (default: the shard count, at most the CPUs)")
    gen.add_argument("--seed", type=int, default=0, help="with criteo: the generator's seed (default 0)")
    gen.add_argument("--new-rows", action="store_true",
                     help="rows to score with a synthetic run's model: the config's own fields (not Criteo's "
                          "shape) and the generator's rows after the dataset's — the distribution the run "
                          "learned, rows it never read")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("autosrh_ray")
    except PackageNotFoundError:
        return "(not installed)"


RESUMABLE = ("run", "prepare", "compare")  # what finished is kept: the same command again resumes


def main(argv: Optional[Sequence[str]] = None) -> int:
    # one line at a time, also into a pipe (``ray job logs``, ``| tee``): progress shows while the stage runs
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)
    args = _parser().parse_args(argv)
    try:
        return _command(args)
    except KeyboardInterrupt:
        if args.command not in RESUMABLE:
            raise
        print("autosrh-ray: interrupted. What finished is kept (prepared data, finished stages and trials, the "
              "latest checkpoints); run the same command again to resume, or add --fresh to start over",
              file=sys.stderr)
        _exit_now(130)
    except StallError as err:
        print(f"autosrh-ray: error: {err}", file=sys.stderr)
        _exit_now(3)
    except (ConfigError, ValueError, FileNotFoundError) as err:
        print(f"autosrh-ray: error: {_one_line(err)}", file=sys.stderr)
        return 2
    return 0


def _command(args: argparse.Namespace) -> int:
    """Run the parsed command; bad input raises (one line, printed by :func:`main`)."""
    # each command imports what it needs when it runs: ``--help`` and ``config`` start without torch or Ray
    if args.command == "config":
        from .config_reference import reference

        print(reference(), end="")
        return 0
    if args.command == "predict":
        from .predict import predict, predict_on_ray

        if args.ray:
            predict_on_ray(args.model, args.input, args.output, args.batch_size, args.address)
        else:
            predict(args.model, args.input, args.output, args.batch_size)
        return 0
    if args.command == "generate" and args.config == "criteo":
        return _generate_criteo(args)
    config = load_config(args.config, args.overrides)
    if args.command == "compare":
        from .compare import compare, parse_methods

        if args.seeds < 1:
            raise ConfigError("--seeds", f"must be >= 1 (got {args.seeds})")
        compare(config, parse_methods(args.methods), args.seeds, args.output)
        return 0
    if args.command == "generate":
        return _generate(args, config)
    return _run(args, config)


def _generate_criteo(args: argparse.Namespace) -> int:
    from .data.generate import write_criteo_profile_shards

    if args.overrides:
        raise ConfigError("--set", "sets keys of a workflow YAML; generate criteo takes --seed")
    paths = write_criteo_profile_shards(args.output, args.rows, args.shards, gzip=args.gzip,
                                        processes=_processes(args), seed=args.seed)
    print(f"wrote {args.rows} Criteo-profile rows in {len(paths)} shards under {args.output}")
    return 0


def _generate(args: argparse.Namespace, config) -> int:
    from .data.generate import criteo_shape, write_criteo_shards

    synthetic = config.dataset.synthetic
    if args.new_rows and config.dataset.name != "synthetic":
        raise ConfigError("--new-rows", f"needs a workflow on the synthetic dataset (this one reads "
                                        f"dataset.name: {config.dataset.name})")
    if args.new_rows:  # the run's own fields, the generator's rows after the dataset's: never trained on
        paths = write_criteo_shards(synthetic, args.output, args.rows, args.shards, gzip=args.gzip,
                                    processes=_processes(args), first_row=synthetic.rows)
        print(f"wrote {args.rows} new rows (rows {synthetic.rows:,}… of the dataset's generator: the "
              f"distribution a run on it learned, rows it never read) in {len(paths)} shards under {args.output}")
        return 0
    paths = write_criteo_shards(criteo_shape(synthetic), args.output, args.rows, args.shards, gzip=args.gzip,
                                processes=_processes(args))
    print(f"wrote {args.rows} rows in {len(paths)} Criteo-format shards under {args.output}")
    return 0


def _run(args: argparse.Namespace, config) -> int:
    """``run`` and ``prepare``."""
    from . import storage, workflow
    from .rate_line import interactive, terminal_log

    output = storage.absolute(args.output or Path("runs") / Path(args.config).stem)
    log = terminal_log if interactive() else print  # lines above the progress bars in a terminal
    if args.command == "prepare":
        prepared = workflow.prepare(config, output, log)
        print(f"prepared {prepared.num_features:,} features into {output}: {prepared.rows.describe()}")
        return 0
    report = Report.from_json(workflow.run(config, output, log=log, fresh=args.fresh))
    for entry in report.models + ([report.reference] if report.reference else []):
        print(_model_line(entry))
    written = ["report.json"] + (["report.md"] if "report_md" in report.top.artifacts else [])
    print("wrote " + " and ".join(storage.join(output, name) for name in written))
    return 0


def _processes(args) -> int:
    """generate's --processes, by default the shard count capped at the CPUs."""
    return args.processes if args.processes is not None else max(1, min(args.shards, os.cpu_count() or 1))


def _exit_now(code: int) -> None:
    """End the process at once after an interrupt or a stall: the workflow's thread is still blocked inside Ray,
    and a normal exit (Ray's shutdown beside it) can crash; the run's local Ray processes end with their driver."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _model_line(entry: ModelEntry) -> str:
    """``autosrh 10: test auc 0.7512, logloss 0.5012; 1,234 kept params (CR 10.00)``, and what a model that
    exceeds its budget exceeds."""
    test = ", ".join(f"{k} {v:.4f}" for k, v in entry.test.items())
    line = f"{entry.method} {entry.budget}: test {test}; {entry.params.kept:,} kept params (CR {entry.cr_achieved:.2f})"
    if not entry.within_budget:
        over = (f"{entry.bytes.embedding:,} embedding bytes > {entry.budget_bytes:,}" if entry.budget_bytes is not None
                else f"{entry.params.kept:,} kept params > {entry.budget_params:,}")
        line += f" — EXCEEDS its budget ({over}: nothing smaller fits)"
    return line


def _one_line(err: BaseException) -> str:
    """The error a user should see: a bad-input error raised inside a Ray task arrives wrapped in Ray's task error
    (whose text is a traceback); its cause's message is the one line."""
    while getattr(err, "cause", None) is not None and err.cause is not err:
        err = err.cause
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


if __name__ == "__main__":
    sys.exit(main())
