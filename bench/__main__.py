"""`make bench`: every benchmark, one after another, each printing its table."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from bench import delivery, migration, processor, refusal, upload, variants, watch

BENCHMARKS: dict[str, Callable[[argparse.Namespace], None]] = {
    "upload": lambda _: upload.main(),
    "delivery": lambda _: delivery.main(),
    "watch": lambda _: watch.main(),
    "processor": lambda _: processor.main(),
    "variants": lambda _: variants.main(),
    "refusal": lambda _: refusal.main(),
    "migration": lambda options: migration.main(rows=options.rows),
}


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="benchmark", help=", ".join(BENCHMARKS))
    parser.add_argument(
        "--rows",
        type=_positive,
        default=migration.DEFAULT_ROWS,
        help=f"migration: image records in the table (default {migration.DEFAULT_ROWS:,})",
    )
    options = parser.parse_args(argv)
    chosen = options.names or list(BENCHMARKS)
    unknown = [name for name in chosen if name not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s) {', '.join(unknown)}: choose from {', '.join(BENCHMARKS)}")
        return 2
    for name in chosen:
        BENCHMARKS[name](options)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
