"""The ``rfseg`` command line. The only module that knows about argv and exit codes.

Each subcommand parses its arguments and calls one function of a stage module. A :class:`UserError` (or a file that
cannot be read) becomes one line on stderr and exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import sys

from rfseg.errors import UserError


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(t) for t in text.replace(" ", "").split(",") if t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return v


# ---------------------------------------------------------------------------------------------------------- arch
def _add_arch(sub):
    p = sub.add_parser("arch", help="parameters, receptive field and canonical name of a UNet architecture")
    p.add_argument("--blocks", type=int, required=True, help="number of encoder blocks N (2-5)")
    p.add_argument("--pools", type=_int_list, help="pooling size per block, e.g. 4,4 (each 2, 4 or 8)")
    p.add_argument("--dilations", type=_int_list, default=(), help="dilation per encoder block + bottleneck, e.g. 1,1,2")
    p.add_argument("--mode", choices=["max", "avg"], default="max", help="max-pool+nearest or avg-pool+bilinear")
    p.add_argument("--pixel-size", type=_positive_float, help="pixel size in nm/px, to report the RF in nm")
    p.add_argument("--sweep", action="store_true", help="list all pooling combinations from {2,4,8} by RF")
    p.add_argument("--max-rf-px", type=int, help="with --sweep: keep architectures whose RF fits in this many px")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_run_arch)


def _run_arch(args):
    from rfseg.models import ArchSpec, describe, sweep

    if args.sweep:
        if args.pools:
            raise UserError("--sweep generates the pools itself: leave out --pools")
        max_rf = args.max_rf_px if args.max_rf_px is not None else 10**9
        rows = [describe(s, args.pixel_size) for s in sweep(args.blocks, max_rf, args.mode, args.dilations)]
    else:
        if not args.pools:
            raise UserError("give --pools (e.g. --pools 4,4) or --sweep")
        rows = [describe(ArchSpec(args.blocks, args.pools, args.dilations, args.mode), args.pixel_size)]
    if args.json:
        print(json.dumps(rows if args.sweep else rows[0], indent=2))
        return
    print(f"{'name':<16}{'params':>9}{'rf_px':>7}{'rf_nm':>9}")
    for r in rows:
        rf_nm = "-" if r["rf_nm"] is None else f"{r['rf_nm']:.3g}"
        print(f"{r['name']:<16}{r['params']:>9,}{r['rf_px']:>7}{rf_nm:>9}")


def _add_arch_table(sub):
    p = sub.add_parser("arch-table", help="CSV of every pooling combination (per N) that fits a patch, by RF")
    p.add_argument("--blocks", type=int, nargs="+", required=True, help="one or more N")
    p.add_argument("--max-rf-px", type=int, required=True, help="keep architectures whose RF is at most this")
    p.add_argument("--out", required=True, help="CSV to write")
    p.set_defaults(func=_run_arch_table)


def _run_arch_table(args):
    import pandas as pd

    from rfseg.io import write_csv
    from rfseg.models import describe, sweep

    rows = [describe(s) for n in args.blocks for s in sweep(n, args.max_rf_px)]
    df = pd.DataFrame(rows).drop(columns=["pixel_size_nm", "rf_nm"])
    for col in ("pools", "dilations"):
        df[col] = df[col].map(lambda v: ",".join(map(str, v)))
    write_csv(df, args.out)
    print(f"wrote {len(df)} architectures to {args.out}")


# ---------------------------------------------------------------------------------------------------------- main
class _Parser(argparse.ArgumentParser):
    """Argument errors as one line (no usage block): ``rfseg arch: error: ...``, exit 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rfseg", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__import__('rfseg').__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    for add in _SUBCOMMANDS:
        add(sub)
    return parser


_SUBCOMMANDS = [_add_arch, _add_arch_table]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except UserError as e:
        print(f"rfseg {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rfseg {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
