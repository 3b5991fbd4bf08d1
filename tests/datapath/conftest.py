"""The storage backends the data-path tests run on: SQLite in a temporary folder, and the
PostgreSQL server on 127.0.0.1:5432 (user postgres, trust auth) in a database created with a
random name for this test session and dropped after it, one schema per test."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import yaml
from pantau.central.storage import Storage

PG_SERVER = os.environ.get("PANTAU_TEST_PG", "postgresql://postgres@127.0.0.1:5432")
BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str | None]:
    """The URL of this session's PostgreSQL database, or None if no server answers."""
    try:
        import psycopg

        admin = psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True, connect_timeout=3)
    except Exception as exc:
        yield None
        print(f"no PostgreSQL at {PG_SERVER}: {exc}")
        return
    name = f"pantau_test_{secrets.token_hex(4)}"
    admin.execute(f"CREATE DATABASE {name}")
    try:
        yield f"{PG_SERVER}/{name}"
    finally:
        admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
        admin.close()


UrlFactory = Callable[[], str]


@pytest.fixture(params=BACKENDS)
def storage_url(request, tmp_path: Path, pg_database: str | None) -> UrlFactory:
    """Makes the URL of a fresh, empty database of the backend under test, per call."""
    made = iter(range(10**6))
    if request.param == "sqlite":
        return lambda: f"sqlite:///{tmp_path}/central-{next(made)}.db"
    if pg_database is None:
        pytest.skip(f"no PostgreSQL server answers at {PG_SERVER}")
    import psycopg

    def fresh() -> str:
        schema = f"t_{secrets.token_hex(6)}"
        with psycopg.connect(pg_database, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        return f"{pg_database}?options={quote(f'-csearch_path={schema}')}"

    return fresh


@pytest.fixture
def new_storage(storage_url: UrlFactory) -> Iterator[Callable[..., Storage]]:
    """Opens fresh storages of the backend under test (closed after the test)."""
    opened: list[Storage] = []

    def make(settings=None) -> Storage:
        st = Storage(storage_url(), settings)
        opened.append(st)
        return st

    yield make
    for st in opened:
        with contextlib.suppress(Exception):
            st.close()


def write_central_config(tmp: Path, port: int, url: str, **more) -> Path:
    path = tmp / "central.yaml"
    path.write_text(
        yaml.safe_dump(
            {"broker": {"port": port, "reconnect_min": 0.2, "reconnect_max": 1.0},
             "storage": url, **more}
        )
    )  # fmt: skip
    return path
