"""`make bench`: every benchmark, one after another, each printing its table. The offline
ones (calibration, too slow for every run) run only when named."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from bench import (
    calibrate,
    delivery,
    ingest,
    migration,
    processor,
    refusal,
    sharp,
    upload,
    variants,
    watch,
)

BENCHMARKS: dict[str, Callable[[argparse.Namespace], None]] = {
    "upload": lambda _: upload.main(),
    "delivery": lambda _: delivery.main(),
    "watch": lambda _: watch.main(),
    "processor": lambda _: processor.main(),
    "ingest": lambda _: ingest.main(),
    "variants": lambda _: variants.main(),
    "sharp": lambda _: sharp.main(),
    "refusal": lambda _: refusal.main(),
    "migration": lambda options: migration.main(rows=options.rows),
}
OFFLINE: dict[str, Callable[[argparse.Namespace], None]] = {
    "calibrate": lambda _: calibrate.main(),  # writes bench/calibration.json; ~45 min, 2 cores
}


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "names",
        nargs="*",
        metavar="benchmark",
        help=f"{', '.join(BENCHMARKS)}; only when named: {', '.join(OFFLINE)}",
    )
    parser.add_argument(
        "--rows",
        type=_positive,
        default=migration.DEFAULT_ROWS,
        help=f"migration: image records in the table (default {migration.DEFAULT_ROWS:,})",
    )
    options = parser.parse_args(argv)
    chosen = options.names or list(BENCHMARKS)
    known = BENCHMARKS | OFFLINE
    unknown = [name for name in chosen if name not in known]
    if unknown:
        print(f"unknown benchmark(s) {', '.join(unknown)}: choose from {', '.join(known)}")
        return 2
    for name in chosen:
        known[name](options)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
