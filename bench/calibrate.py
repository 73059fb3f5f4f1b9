"""Quality floors, calibrated (issue 17). Per preset, the floor is the SSIMULACRA2 score
(bench/quality.py) that today's seed -- Pillow JPEG quality 85, optimize + progressive --
reaches, median over the photos of bench/photos.py; per encoder, the calibrated setting is the
lowest quality whose median score reaches the floor, shown with its bytes and encode time.
JPEG: Pillow (libjpeg-turbo), Pillow + mozjpeg's lossless re-optimisation
(mozjpeg-lossless-optimization), jpegli (pyjpegli), jpegli + mozjpeg's re-optimisation.
WebP: Pillow (libwebp) at each method. Writes bench/calibration.json, from which the
processor's constants are taken.

Slow (one 12 MP score takes seconds and each encoder needs about seven per photo and
preset), so `make bench` leaves it out: run `python -m bench calibrate`. Scores use every core;
encode times are taken afterwards on one core, the candidates' rounds interleaved so that a
drift in this machine's speed hits them all alike.
"""

from __future__ import annotations

import io
import json
import os
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import cache
from importlib.metadata import version
from pathlib import Path

import mozjpeg_lossless_optimization as mozjpeg  # type: ignore[import-untyped]
import numpy as np
import pyjpegli  # type: ignore[import-not-found]
from PIL import Image

from bench.harness import table
from bench.photos import PHOTOS, source
from bench.quality import reference, score
from imagery.common.presets import DEFAULT_PRESETS

OUTPUT = Path(__file__).with_name("calibration.json")
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
SEED_JPEG = 85  # the seed's JPEG quality: its score is the floor
SEED_WEBP = (80, 4)  # the seed's WebP quality and method, for comparison
LOWEST = 30  # the search starts here: a calibrated quality is never reported below it
PRESETS = [p.name for p in DEFAULT_PRESETS]
THREE_SIZES = ["thumbnail", "small", "medium"]  # the three sizes
Encode = Callable[[Image.Image, int], bytes]


def _pillow(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality, optimize=True, progressive=True)
    return buffer.getvalue()


def _pillow_mozjpeg(image: Image.Image, quality: int) -> bytes:
    """mozjpeg re-codes only the entropy layer (progressive scans it searches for, optimal
    Huffman tables), so Pillow's plain baseline encode is all it needs."""
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return bytes(mozjpeg.optimize(buffer.getvalue()))


def _jpegli(image: Image.Image, quality: int) -> bytes:
    """pyjpegli writes baseline 4:2:0 with no markers but the frame's; it has no option for
    progressive."""
    return bytes(pyjpegli.encode(np.asarray(image), image.width, image.height, quality=quality))


def _jpegli_mozjpeg(image: Image.Image, quality: int) -> bytes:
    return bytes(mozjpeg.optimize(_jpegli(image, quality)))


def _webp(method: int) -> Encode:
    def encode(image: Image.Image, quality: int) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, "WEBP", quality=quality, method=method)
        return buffer.getvalue()

    return encode


# name -> (family, encode): one family's encoders decode to the same pixels at one quality.
JPEG: dict[str, tuple[str, Encode]] = {
    "Pillow (libjpeg-turbo)": ("pillow", _pillow),
    "Pillow + mozjpeg": ("pillow", _pillow_mozjpeg),
    "jpegli": ("jpegli", _jpegli),
    "jpegli + mozjpeg": ("jpegli", _jpegli_mozjpeg),
}
WEBP: dict[str, tuple[str, Encode]] = {f"WebP m{m}": (f"webp{m}", _webp(m)) for m in range(7)}
FAMILIES: dict[str, Encode] = dict([*JPEG.values(), *WEBP.values()])
Scores = dict[tuple[str, str, str], dict[int, float]]  # (photo, preset, family) -> q -> score


@cache
def _reference(photo_name: str, preset_name: str) -> Image.Image:
    preset = next(p for p in DEFAULT_PRESETS if p.name == preset_name)
    return reference(source(photo_name), preset)


def _score(photo_name: str, preset_name: str, family: str, quality: int) -> float:
    image = _reference(photo_name, preset_name)
    return score(image, FAMILIES[family](image, quality))


def _seed_score(photo_name: str, preset_name: str) -> float:
    return _score(photo_name, preset_name, "pillow", SEED_JPEG)


def _search(photo_name: str, preset_name: str, family: str, floor: float) -> dict[int, float]:
    """The scores a bisection takes, finding the lowest quality from LOWEST to 100 that
    reaches `floor` on this photo (scores rise with quality, give or take noise)."""
    seen: dict[int, float] = {}
    low, high = LOWEST - 1, 100  # low fails (assumed), high passes (or nothing does)
    while high - low > 1:
        middle = (low + high) // 2
        seen[middle] = _score(photo_name, preset_name, family, middle)
        low, high = (low, middle) if seen[middle] >= floor else (middle, high)
    if high not in seen:
        seen[high] = _score(photo_name, preset_name, family, high)
    return seen


def _lowest_passing(seen: dict[int, float], floor: float) -> int:
    return min((q for q, s in seen.items() if s >= floor), default=100)


def _calibrate() -> tuple[dict[str, list[float]], dict[tuple[str, str], int], Scores]:
    """Scores, on every core: the seed's per photo (the floor is their median); then per
    preset and family the calibrated quality, the median over photos of each one's lowest
    quality reaching the floor: with scores rising with quality, that is the lowest quality
    whose median score reaches it. Returns the seed's scores, the qualities, all scores."""
    jobs = [(name, preset) for preset in reversed(PRESETS) for name in PHOTOS]  # largest first
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        seed = dict(zip(jobs, pool.map(_seed_score, *zip(*jobs, strict=True)), strict=True))
        seeds = {p: [seed[name, p] for name in PHOTOS] for p in PRESETS}
        floor = {p: statistics.median(seeds[p]) for p in PRESETS}
        searches = [(name, p, family) for name, p in jobs for family in FAMILIES]
        found = pool.map(_search, *zip(*searches, strict=True), [floor[s[1]] for s in searches])
        scores: Scores = dict(zip(searches, found, strict=True))
        chosen = {
            (p, family): statistics.median_low(
                _lowest_passing(scores[name, p, family], floor[p]) for name in PHOTOS
            )
            for p in PRESETS
            for family in FAMILIES
        }
        wanted = {(n, p, f, q) for (p, f), q in chosen.items() for n in PHOTOS}
        wanted |= {(n, p, "webp4", SEED_WEBP[0]) for n, p in jobs}
        missing = sorted(w for w in wanted if w[3] not in scores[w[0], w[1], w[2]])
        if missing:
            taken = pool.map(_score, *zip(*missing, strict=True))
            for (name, p, family, q), value in zip(missing, taken, strict=True):
                scores[name, p, family][q] = value
    return seeds, chosen, scores


@dataclass(frozen=True)
class Result:
    quality: int
    score: float  # median over the photos
    size: int  # bytes, all photos
    ms: float  # encode time, all photos (each the median of ROUNDS), one core


def _timed(preset: str, candidates: dict[str, tuple[Encode, int]]) -> dict[str, tuple[float, int]]:
    """Per candidate, encode ms and bytes summed over the photos; each round encodes with
    every candidate in turn."""
    totals = dict.fromkeys(candidates, (0.0, 0))
    for name in PHOTOS:
        image = _reference(name, preset)
        sizes = {k: len(encode(image, q)) for k, (encode, q) in candidates.items()}  # warm-up
        runs: dict[str, list[float]] = {k: [] for k in candidates}
        for _ in range(ROUNDS):
            for k, (encode, q) in candidates.items():
                started = time.perf_counter()
                encode(image, q)
                runs[k].append((time.perf_counter() - started) * 1000)
        for k, (ms, size) in totals.items():
            totals[k] = (ms + statistics.median(runs[k]), size + sizes[k])
    return totals


def _results(preset: str, chosen: dict[tuple[str, str], int], scores: Scores) -> dict[str, Result]:
    seeds = {
        f"seed: Pillow q{SEED_JPEG}": ("pillow", _pillow, SEED_JPEG),
        f"seed: WebP q{SEED_WEBP[0]} m{SEED_WEBP[1]}": ("webp4", _webp(SEED_WEBP[1]), SEED_WEBP[0]),
    }
    named = {n: (f, e, chosen[preset, f]) for n, (f, e) in {**JPEG, **WEBP}.items()}
    candidates = {**seeds, **named}
    timed = _timed(preset, {n: (e, q) for n, (_, e, q) in candidates.items()})
    return {
        n: Result(
            q,
            statistics.median(scores[photo, preset, f][q] for photo in PHOTOS),
            timed[n][1],
            timed[n][0],
        )
        for n, (f, _, q) in candidates.items()
    }


def _pick_webp(results: dict[str, Result]) -> str:
    """The method with the fewest bytes at the floor among those no slower than method 4."""
    today = results[f"WebP m{SEED_WEBP[1]}"].ms
    return min((n for n in WEBP if results[n].ms <= today), key=lambda n: results[n].size)


def _rows(preset: str, results: dict[str, Result], names: list[str]) -> list[list[object]]:
    seed = results[names[0]]
    return [
        [preset, n, r.quality, r.score, r.size / 1000, r.size / seed.size, r.ms, r.ms / seed.ms]
        for n in names
        for r in (results[n],)
    ]


def _totals(results: dict[str, dict[str, Result]], picked: dict[str, str]) -> list[list[object]]:
    """Per output set, each candidate's bytes and ms over its presets, against its format's
    seed; "WebP picked" takes the picked method per preset."""
    rows: list[list[object]] = []
    seed_jpeg, seed_webp = f"seed: Pillow q{SEED_JPEG}", f"seed: WebP q{SEED_WEBP[0]} m4"
    for label, presets in (("5 presets", PRESETS), ("3 sizes", THREE_SIZES)):
        lines = {n: (seed_jpeg, {p: n for p in presets}) for n in (seed_jpeg, *JPEG)}
        lines |= {n: (seed_webp, {p: n for p in presets}) for n in (seed_webp, *WEBP)}
        lines["WebP picked"] = (seed_webp, {p: picked[p] for p in presets})
        for name, (seed, per_preset) in lines.items():
            size = sum(results[p][n].size for p, n in per_preset.items())
            ms = sum(results[p][n].ms for p, n in per_preset.items())
            base_size = sum(results[p][seed].size for p in presets)
            base_ms = sum(results[p][seed].ms for p in presets)
            rows.append([label, name, size / 1000, size / base_size, ms, ms / base_ms])
    return rows


def main() -> None:
    started = time.perf_counter()
    seeds, chosen, scores = _calibrate()
    print(f"scored in {time.perf_counter() - started:.0f} s", flush=True)
    results = {p: _results(p, chosen, scores) for p in PRESETS}
    floor = {p: statistics.median(seeds[p]) for p in PRESETS}
    print(
        table(
            f"Floors: SSIMULACRA2 of the seed (Pillow JPEG q{SEED_JPEG}) per photo; the floor "
            "is their median",
            ["preset", *PHOTOS, "floor"],
            [[p, *seeds[p], floor[p]] for p in PRESETS],
        )
    )
    headers = ["preset", "encoder", "quality", "median score", "kB", "vs seed", "ms", "vs seed"]
    jpeg_names = [f"seed: Pillow q{SEED_JPEG}", *JPEG]
    webp_names = [f"seed: WebP q{SEED_WEBP[0]} m{SEED_WEBP[1]}", *WEBP]
    note = f"kB and ms summed over the {len(PHOTOS)} photos; ms the median of {ROUNDS}, 1 core"
    for title, names in (("JPEG", jpeg_names), ("WebP", webp_names)):
        rows = [row for p in PRESETS for row in _rows(p, results[p], names)]
        print(table(f"{title} at the floor, against the seed ({note})", headers, rows))
    best_jpeg = min(JPEG, key=lambda n: sum(results[p][n].size for p in PRESETS))
    picked = {p: _pick_webp(results[p]) for p in PRESETS}
    headers = ["outputs", "encoder", "kB", "vs seed", "ms", "vs seed"]
    print(table("Totals, against the seed of the same format", headers, _totals(results, picked)))
    print(f"JPEG: {best_jpeg}; WebP (fewest bytes, no slower than m4): {picked}")
    _write(floor, results, best_jpeg, picked)


def _write(
    floor: dict[str, float],
    results: dict[str, dict[str, Result]],
    best_jpeg: str,
    picked: dict[str, str],
) -> None:
    def entry(r: Result) -> dict[str, object]:
        return {
            "quality": r.quality,
            "score": round(r.score, 2),
            "bytes": r.size,
            "ms": round(r.ms, 1),
        }

    data = {
        "about": "Written by `python -m bench calibrate` (bench/calibrate.py). Per preset, the "
        f"floor is the median SSIMULACRA2 score of Pillow JPEG q{SEED_JPEG} over the photos; a "
        "quality is the lowest whose median score reaches the floor. bytes and ms: all photos; "
        "ms: one core of the machine that wrote this.",
        "metric": f"SSIMULACRA2 (ssimulacra2 {version('ssimulacra2')})",
        "photos": list(PHOTOS),
        "floor": {p: round(floor[p], 2) for p in PRESETS},
        "jpeg": {
            "encoder": best_jpeg,
            "quality": {p: results[p][best_jpeg].quality for p in PRESETS},
        },
        "webp": {
            p: {"quality": results[p][picked[p]].quality, "method": int(picked[p][-1])}
            for p in PRESETS
        },
        "candidates": {n: {p: entry(results[p][n]) for p in PRESETS} for n in results[PRESETS[0]]},
    }
    OUTPUT.write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {OUTPUT}", flush=True)


if __name__ == "__main__":
    main()
