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
from .supervise import StallError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autosrh-ray", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("run", "prepare → search → prune → retrain → evaluate; writes DIR/report.json"),
                            ("prepare", "the data stage alone")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("config", help="workflow YAML")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="dotted.key=value",
                       help="override a config key (value parsed as YAML); repeatable")
        p.add_argument("--output", help="output directory or URI, e.g. s3://bucket/runs/x (default runs/<config stem>)")
    sub.choices["run"].add_argument("--fresh", action="store_true",
                                    help="start over instead of resuming the finished stages and trials of an "
                                         "earlier run into the same output")
    comp = sub.add_parser("compare", help="run several dimension methods × seeds on the same data; writes "
                                          "DIR/comparison.json, comparison.md and comparison.png")
    comp.add_argument("config", help="workflow YAML (its search.method is replaced by each of --methods)")
    comp.add_argument("--set", dest="overrides", action="append", default=[], metavar="dotted.key=value")
    comp.add_argument("--methods", default="autosrh,uniform,magnitude,grid,random,mde,autodim,autoemb,pep",
                      help="comma-separated search.method values (default: all)")
    comp.add_argument("--seeds", type=int, default=3, help="runs per method, train.seed + 0, 1, … (default 3)")
    comp.add_argument("--output", required=True, help="directory for the comparison and every run")
    pred = sub.add_parser("predict", help="score raw rows (the dataset's own format) with a finished run's model")
    pred.add_argument("--model", required=True, help="the run's output directory, a model folder in it, or a model.pt")
    pred.add_argument("--input", required=True, help="rows to score: a file, a directory of shards or a glob")
    pred.add_argument("--output", required=True, help="scores: .parquet, or .csv (position, label, score per row)")
    pred.add_argument("--batch-size", type=int, default=8192, help="rows scored at a time (memory: rows × fields × K floats)")
    pred.add_argument("--ray", action="store_true",
                      help="score input chunks as Ray Data tasks side by side (big inputs); --output is then a "
                           "directory or URI of Parquet parts")
    pred.add_argument("--address", default="local", help="with --ray: the Ray to use (local, auto or an address)")
    conf = sub.add_parser("config", help="the configuration reference: every key, its default and meaning")
    conf.add_argument("--list", action="store_true", required=True,
                      help="print every config key with its default, allowed values and meaning (Markdown)")
    gen = sub.add_parser("generate", help="write the synthetic dataset as Criteo dac text shards")
    gen.add_argument("config", help="workflow YAML (its dataset.synthetic section shapes the data)")
    gen.add_argument("--set", dest="overrides", action="append", default=[], metavar="dotted.key=value")
    gen.add_argument("--rows", type=int, required=True, help="rows in all")
    gen.add_argument("--shards", type=int, default=1)
    gen.add_argument("--gzip", action="store_true")
    gen.add_argument("--output", required=True, help="directory for part-*.txt[.gz]")
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("autosrh_ray")
    except PackageNotFoundError:
        return "(not installed)"


def main(argv: Optional[Sequence[str]] = None) -> int:
    # one line at a time, also into a pipe (``ray job logs``, ``| tee``): progress shows while the stage runs
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)
    args = _parser().parse_args(argv)
    if args.command == "config":
        from .config_reference import reference

        print(reference(), end="")
        return 0
    if args.command == "predict":
        from .predict import predict, predict_on_ray

        try:
            if args.ray:
                predict_on_ray(args.model, args.input, args.output, args.batch_size, args.address)
            else:
                predict(args.model, args.input, args.output, args.batch_size)
        except (ConfigError, ValueError, FileNotFoundError) as err:
            print(f"autosrh-ray: error: {err}", file=sys.stderr)
            return 2
        return 0
    try:
        config = load_config(args.config, args.overrides)
        from . import workflow

        if args.command == "compare":
            from .compare import compare, parse_methods

            if args.seeds < 1:
                raise ConfigError("--seeds", f"must be >= 1 (got {args.seeds})")
            compare(config, parse_methods(args.methods), args.seeds, args.output)
            return 0
        if args.command == "generate":
            from .data.generate import criteo_shape, write_criteo_shards

            paths = write_criteo_shards(criteo_shape(config.dataset.synthetic), args.output, args.rows, args.shards,
                                        gzip=args.gzip)
            print(f"wrote {args.rows} rows in {len(paths)} Criteo-format shards under {args.output}")
            return 0
        from . import storage

        output = storage.absolute(args.output or Path("runs") / Path(args.config).stem)
        from .rate_line import interactive, terminal_log

        log = terminal_log if interactive() else print  # lines above the progress bars in a terminal
        if args.command == "prepare":
            prepared = workflow.prepare(config, output, log)
            r = prepared.rows
            print(f"prepared {prepared.num_features:,} features into {output}: rows read {r.read:,} = train "
                  f"{r.train:,} + valid {r.valid:,} + test {r.test:,} + skipped {r.skipped:,}")
        else:
            report = workflow.run(config, output, log=log, fresh=args.fresh)
            for entry in report["models"] + ([report["reference"]] if "reference" in report else []):
                print(_model_line(entry))
            written = ["report.json"] + (["report.md"] if "report_md" in report["artifacts"] else [])
            print("wrote " + " and ".join(storage.join(output, name) for name in written))
    except KeyboardInterrupt:
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


def _exit_now(code: int) -> None:
    """End the process at once after an interrupt or a stall: the workflow's thread is still blocked inside Ray,
    and a normal exit (Ray's shutdown beside it) can crash; the run's local Ray processes end with their driver."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _model_line(entry: dict) -> str:
    """``autosrh 10: test auc 0.7512, logloss 0.5012; 1,234 kept params (CR 10.00)``."""
    test = ", ".join(f"{k} {v:.4f}" for k, v in entry["test"].items())
    return (f"{entry['method']} {entry['budget']}: test {test}; {entry['params']['kept']:,} kept params "
            f"(CR {entry['cr_achieved']:.2f})")


def _one_line(err: BaseException) -> str:
    """The error a user should see: a bad-input error raised inside a Ray task arrives wrapped in Ray's task error
    (whose text is a traceback); its cause's message is the one line."""
    while getattr(err, "cause", None) is not None and err.cause is not err:
        err = err.cause
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


if __name__ == "__main__":
    sys.exit(main())
