"""``autosrh-ray`` command line: ``run`` (the whole workflow) and ``prepare`` (the data stage)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from .config import ConfigError, load_config


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autosrh-ray", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("run", "prepare → search → prune → retrain → evaluate; writes DIR/report.json"),
                            ("prepare", "the data stage alone")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("config", help="workflow YAML")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="dotted.key=value",
                       help="override a config key (value parsed as YAML); repeatable")
        p.add_argument("--output", help="output directory (default runs/<config stem>)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config, args.overrides)
        output = Path(args.output or Path("runs") / Path(args.config).stem)
        from . import workflow

        if args.command == "prepare":
            prepared = workflow.prepare(config, output)
            print(f"prepared {prepared.num_features} features into {output}: {prepared.rows}")
        else:
            report = workflow.run(config, output)
            print(f"wrote {output / 'report.json'}: test {report['test']}, cr {report['cr_achieved']:.2f}")
    except (ConfigError, ValueError, FileNotFoundError) as err:
        print(f"autosrh-ray: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
