"""Retention: one housekeeping sweep prunes each kept table of what is past its days, batch
by batch (each batch a short transaction of its own, so no lock is held for long and
concurrent writes go on), then reads the tables' sizes for the `imagery.table.rows` gauge.

The gauge is observed by the leading processor only (`leading`): every processor prunes
(several deleting at once skip or wait on each other's rows, and find nothing twice), but a
size reported by each would be summed by dashboards."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Meter, Observation

from imagery.processor.ports import Retention, RetentionRule

log = logging.getLogger(__name__)
BATCH = 5_000  # rows per statement


class PruneRetained:
    def __init__(
        self,
        retention: Retention,
        rules: Sequence[RetentionRule],
        *,
        batch: int = BATCH,
        leading: Callable[[], bool] = lambda: True,
        meter: Meter | None = None,
    ) -> None:
        short = [rule.table for rule in rules if rule.days < 1]
        if short:  # 0 days would prune every row
            raise ValueError(f"A retention of less than a day for {', '.join(short)}.")
        self._retention = retention
        self._rules = tuple(rules)
        self._batch = batch
        self._leading = leading
        self._failures = (meter or metrics.get_meter(__name__)).create_counter(
            "imagery.retention.prune_failures",
            description="Prunes of a table past its retention that failed, by table (retried"
            " the next pass)",
        )
        self.sizes: dict[str, int] = {}  # rows per table, as the last sweep read them
        (meter or metrics.get_meter(__name__)).create_observable_gauge(
            "imagery.table.rows",
            callbacks=[self._observe],
            unit="{row}",
            description="Rows of the tables housekeeping keeps in bounds (estimates), by"
            " table; reported by one processor only",
        )

    def _observe(self, _: CallbackOptions) -> list[Observation]:
        if not self._leading():
            return []
        return [Observation(rows, {"table": table}) for table, rows in self.sizes.items()]

    async def __call__(self) -> dict[str, int]:
        """One sweep: the rows pruned, by table. A table that fails is logged and left for
        the next sweep; the others are pruned all the same."""
        pruned: dict[str, int] = {}
        for rule in self._rules:
            try:
                pruned[rule.table] = await self._prune(rule)
            except Exception as exc:  # noqa: BLE001 - one table never stops the others
                self._failures.add(1, {"table": rule.table})
                log.warning(
                    "could not prune a table past its retention",
                    extra={"table": rule.table, "error": f"{type(exc).__name__}: {exc}"},
                )
        self.sizes = await self._retention.row_estimates()
        return pruned

    async def _prune(self, rule: RetentionRule) -> int:
        total = 0
        while True:
            gone = await self._retention.prune(rule.table, days=rule.days, limit=self._batch)
            total += gone
            if gone < self._batch:
                break
        if total:
            log.info(
                "pruned rows past their retention",
                extra={"table": rule.table, "rows": total, "retention_days": rule.days},
            )
        return total
