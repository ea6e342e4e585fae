"""PostgreSQL for the tests that run against it when ``EDGELOOP_TEST_POSTGRES_URL`` is set.

``PG_PARAM`` is a fixture parameter that skips without the variable; :func:`fresh_schema` yields a
URL whose search_path is a new, empty schema (selected through libpq's
``options=-csearch_path=...``) and drops it afterwards; the ``pg_url`` fixtures of
tests/registry and tests/control wrap it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

PG_ENV = "EDGELOOP_TEST_POSTGRES_URL"
PG_PARAM = pytest.param(
    "postgres",
    marks=[
        pytest.mark.postgres,
        pytest.mark.skipif(not os.environ.get(PG_ENV), reason=f"{PG_ENV} is not set"),
    ],
)


def fresh_schema(prefix: str = "edgeloop_test") -> Iterator[str]:
    """Generator body of a fixture: a URL on a fresh schema, dropped when the test ends."""
    base = os.environ.get(PG_ENV)
    if not base:
        pytest.skip(f"{PG_ENV} is not set")
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    parsed = sa.make_url(base)
    if parsed.drivername == "postgresql":  # SQLAlchemy would pick psycopg2; we ship psycopg 3
        parsed = parsed.set(drivername="postgresql+psycopg")
    admin = sa.create_engine(parsed)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    url = parsed.update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()
