"""Isolated job processes: a hostile job costs its own process, never the others'."""

from __future__ import annotations

import asyncio
import itertools
import os
import resource
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from imagery.processor.adapters.isolation import IsolatedRunner, JobLimits
from imagery.processor.adapters.verify import verify
from imagery.processor.imaging import Limits, Rejected
from tests import images
from tests.jobs import (
    allocate,
    burn_cpu,
    crash,
    environment,
    killed_from_outside,
    pid,
    preloaded_modules,
    running_interval,
    sleep_then_return,
    try_to,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def runner() -> Iterator[IsolatedRunner]:
    runner = IsolatedRunner(4, JobLimits(memory_bytes=512 * 1024**2, cpu_seconds=1, wall_seconds=4))
    runner.warm_up()
    yield runner
    runner.close()


async def test_results_and_exceptions_cross_back(runner: IsolatedRunner) -> None:
    result = await runner.run(verify, images.png(20, 10), "image/png", Limits())
    assert (result.value.width, result.value.height) == (20, 10)
    assert result.peak_rss_bytes is not None and 1_000_000 < result.peak_rss_bytes < 500_000_000
    with pytest.raises(Rejected) as caught:
        await runner.run(verify, images.html(), "image/png", Limits())
    assert caught.value.reason == "UNSUPPORTED_FORMAT"


async def test_each_job_gets_a_fresh_process(runner: IsolatedRunner) -> None:
    assert len({(await runner.run(pid)).value for _ in range(3)}) == 3


async def test_job_processes_start_with_render_loaded_and_warmed_up(
    runner: IsolatedRunner,
) -> None:
    modules = (await runner.run(preloaded_modules)).value
    assert "imagery.processor.adapters.render" in modules
    assert "imagery.processor.adapters.warmup" in modules, "the forkserver warmed the libraries up"


@pytest.mark.parametrize(
    ("job", "reason"),
    [(burn_cpu, "CPU_LIMIT"), (allocate, "MEMORY_LIMIT"), (crash, "PROCESSING_CRASHED")],
)
async def test_a_job_over_its_limits_fails_alone(
    runner: IsolatedRunner, job: object, reason: str
) -> None:
    bystanders = [asyncio.create_task(runner.run(sleep_then_return, 0.5, i)) for i in range(2)]
    with pytest.raises(Rejected) as caught:
        await runner.run(job)  # type: ignore[arg-type]
    assert caught.value.reason == reason
    assert [r.value for r in await asyncio.gather(*bystanders)] == [0, 1], "the others finished"
    assert (await runner.run(verify, images.jpeg(), "image/jpeg", Limits())).value.format == "jpeg"


async def test_a_job_the_kernel_killed_is_told_apart_from_one_over_its_own_limit(
    runner: IsolatedRunner,
) -> None:
    with pytest.raises(Rejected) as killed:
        await runner.run(killed_from_outside)
    assert (killed.value.reason, killed.value.by_the_kernel) == ("MEMORY_LIMIT", True)
    with pytest.raises(Rejected) as own:
        await runner.run(allocate)
    assert (own.value.reason, own.value.by_the_kernel) == ("MEMORY_LIMIT", False)


async def test_a_job_that_hangs_is_stopped_at_the_wall_clock_limit(runner: IsolatedRunner) -> None:
    with pytest.raises(Rejected) as caught:
        await runner.run(sleep_then_return, 30, 0)
    assert caught.value.reason == "PROCESSING_TIMEOUT", (
        "killed by the 4 s wall clock, not left to sleep"
    )


def test_the_parent_keeps_no_limits() -> None:
    assert resource.getrlimit(resource.RLIMIT_CPU)[0] == resource.RLIM_INFINITY


async def test_no_more_jobs_run_at_once_than_there_are_slots() -> None:
    one_slot = IsolatedRunner(1, JobLimits(wall_seconds=10))
    try:
        results = await asyncio.gather(*(one_slot.run(running_interval, 0.2) for _ in range(3)))
    finally:
        one_slot.close()
    spans = sorted(r.value for r in results)
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in itertools.pairwise(spans)), (
        "uploads beyond the slots wait for a slot instead of running a third job at once"
    )


async def test_a_job_holds_no_secrets_and_can_open_reach_or_run_nothing(
    runner: IsolatedRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "token"
    secret.write_text("hunter2")
    job_environment = (await runner.run(environment)).value
    assert set(job_environment) <= {"LC_CTYPE"}, "no DATABASE_URL, no AWS keys, no tokens"
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = str(listener.getsockname()[1])
        attempts = {
            "a file": ("open", str(secret)),
            "the processor's environment": ("open", f"/proc/{os.getpid()}/environ"),
            "a socket": ("socket", ""),
            "a connection": ("connect", port),
            "a program": ("exec", ""),
            "the processor, by signal": ("signal", str(os.getpid())),
            "a process of its own": ("fork", ""),
        }
        for what, (action, target) in attempts.items():
            outcome = (await runner.run(try_to, action, target)).value
            assert outcome == "refused: PermissionError", f"a job reached {what}: {outcome}"


def test_the_job_host_starts_with_an_empty_environment(runner: IsolatedRunner) -> None:
    """Python itself adds LC_CTYPE=C.UTF-8 (PEP 538 locale coercion) after start; nothing
    else is ever there."""
    host = runner._host
    assert host is not None and host.process.poll() is None
    environ = Path(f"/proc/{host.process.pid}/environ").read_bytes()
    assert environ == b"", "the host, and every job forked from it, starts with nothing"


def test_closing_the_runner_lets_the_job_host_exit_on_its_own() -> None:
    """The host sees its control socket close and leaves; it is never killed for hanging on."""
    runner = IsolatedRunner(1, JobLimits())
    runner.warm_up()
    host = runner._host
    assert host is not None
    runner.close()
    assert host.process.returncode == 0
