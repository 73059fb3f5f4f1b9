"""The local stack's keys (`make run KEEP_DATA=1` keeps them): a saved key that still works
is reused, a revoked one is replaced."""

from __future__ import annotations

import asyncpg
import pytest

from imagery.devstack.credentials import ADMIN_KEY, API_KEY, local_keys

pytestmark = pytest.mark.integration


async def test_working_keys_are_reused_and_revoked_ones_replaced(
    database_url: str, pool: asyncpg.Pool
) -> None:
    first = await local_keys(database_url)
    assert await local_keys(database_url, first) == first
    await pool.execute("UPDATE api_keys SET revoked_at = now() WHERE project_id = 'default'")
    again = await local_keys(database_url, first)
    assert again[ADMIN_KEY] == first[ADMIN_KEY]
    assert again[API_KEY] != first[API_KEY]
