"""`make bench`: every benchmark, one after another, each printing its table."""

from __future__ import annotations

import sys

from bench import delivery, processor, refusal, upload, variants

BENCHMARKS = {
    "upload": upload.main,
    "delivery": delivery.main,
    "processor": processor.main,
    "variants": variants.main,
    "refusal": refusal.main,
}


def main(argv: list[str]) -> int:
    chosen = argv or list(BENCHMARKS)
    unknown = [name for name in chosen if name not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s) {', '.join(unknown)}: choose from {', '.join(BENCHMARKS)}")
        return 2
    for name in chosen:
        BENCHMARKS[name]()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
