"""`relational:` settings: SQLite by default, PostgreSQL chosen in the file or the environment, the
password typed as a secret and never printed, unknown keys refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.settings import (
    ConfigError,
    PostgresSslMode,
    RelationalKind,
    environment_values,
    load_settings,
)
from core.settings_env import describe

PASSWORD = "pg-secret-7c2e"


def config(tmp_path: Path, text: str = "") -> Path:
    path = tmp_path / "city.yaml"
    path.write_text(text + "\n")
    return path


def test_sqlite_is_the_default(tmp_path: Path) -> None:
    assert load_settings(config(tmp_path), {}).relational.kind is RelationalKind.SQLITE


def test_postgresql_from_the_file_keeps_its_password_out_of_sight(tmp_path: Path) -> None:
    settings = load_settings(config(tmp_path, f"""
relational:
  kind: postgresql
  postgresql:
    {{host: db.city, port: 5433, database: cw, user: api, password: {PASSWORD}, sslmode: verify-full}}
"""), {})
    postgres = settings.relational.postgresql
    assert settings.relational.kind is RelationalKind.POSTGRESQL
    assert postgres.sslmode is PostgresSslMode.VERIFY_FULL and postgres.password is not None
    assert postgres.password.get_secret_value() == PASSWORD
    assert PASSWORD not in repr(settings) and PASSWORD not in str(settings.model_dump())
    assert postgres.describe() == "postgresql://api@db.city:5433/cw"


def test_postgresql_from_the_environment_with_the_password_in_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "pg-password"
    secret.write_text(PASSWORD + "\n")
    environ = {"CITYWATCH_RELATIONAL__KIND": "postgresql",
               "CITYWATCH_RELATIONAL__POSTGRESQL__HOST": "db.city",
               "CITYWATCH_RELATIONAL__POSTGRESQL__POOL_SIZE": "2",
               "CITYWATCH_RELATIONAL__POSTGRESQL__PASSWORD_FILE": str(secret)}
    settings = load_settings(config(tmp_path), environ)
    postgres = settings.relational.postgresql
    assert settings.relational.kind is RelationalKind.POSTGRESQL
    assert postgres.host == "db.city" and postgres.pool_size == 2
    assert postgres.password is not None and postgres.password.get_secret_value() == PASSWORD
    shown = "\n".join(describe(settings, environment_values(environ)))
    assert 'relational.postgresql.password = "**********"  <- file ' in shown and PASSWORD not in shown


@pytest.mark.parametrize(("text", "field"), [
    ("relational: {kind: postgres}", "relational.kind"),
    ("relational: {postgres: {host: db}}", "relational.postgres"),
    ("relational: {postgresql: {pasword: x}}", "relational.postgresql.pasword"),
    ("relational: {postgresql: {pool_size: 0}}", "relational.postgresql.pool_size"),
    ("relational: {postgresql: {sslmode: on}}", "relational.postgresql.sslmode"),
])
def test_bad_relational_settings_name_the_field(tmp_path: Path, text: str, field: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(config(tmp_path, text), {})
    assert f"\n  {field}: " in str(raised.value)


def test_a_misspelt_variable_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^environment: CITYWATCH_RELATIONAL__POSTGRESQL__PASWORD names no "
                                          r"configuration key \(did you mean "
                                          r"CITYWATCH_RELATIONAL__POSTGRESQL__PASSWORD\?\)"):
        load_settings(config(tmp_path), {"CITYWATCH_RELATIONAL__POSTGRESQL__PASWORD": PASSWORD})
