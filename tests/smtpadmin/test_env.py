"""Settings read the environment strictly: a value that cannot be used stops the start."""

from __future__ import annotations

import pytest

from smtpadmin.env import EnvironmentError_, env_bool, env_int, env_list, env_str
from smtpadmin.settings import _database


def test_a_missing_variable_gives_the_default() -> None:
    assert env_str("NAME", "fallback", environ={}) == "fallback"
    assert env_bool("FLAG", True, environ={}) is True
    assert env_int("COUNT", 7, environ={}) == 7
    assert env_list("ITEMS", ["a"], environ={}) == ["a"]


@pytest.mark.parametrize("word", ["1", "true", "YES", " on "])
def test_it_reads_true_words(word: str) -> None:
    assert env_bool("DEBUG", False, environ={"DEBUG": word}) is True


@pytest.mark.parametrize("word", ["0", "false", "No", "off", ""])
def test_it_reads_false_words(word: str) -> None:
    assert env_bool("DEBUG", True, environ={"DEBUG": word}) is False


@pytest.mark.parametrize("word", ["yes please", "2", "enabled", "t"])
def test_a_bad_boolean_is_an_error_not_false(word: str) -> None:
    with pytest.raises(EnvironmentError_, match="DEBUG"):
        env_bool("DEBUG", False, environ={"DEBUG": word})


def test_it_reads_a_whole_number() -> None:
    assert env_int("TIMEOUT", 30, environ={"TIMEOUT": " 45 "}) == 45


@pytest.mark.parametrize("raw", ["ten", "4.5", "", "30s"])
def test_a_bad_number_is_an_error(raw: str) -> None:
    with pytest.raises(EnvironmentError_, match="not a whole number"):
        env_int("TIMEOUT", 30, environ={"TIMEOUT": raw})


def test_a_number_outside_its_range_is_an_error() -> None:
    with pytest.raises(EnvironmentError_, match="below the minimum 5"):
        env_int("TIMEOUT", 30, environ={"TIMEOUT": "1"}, minimum=5)
    with pytest.raises(EnvironmentError_, match="above the maximum 10"):
        env_int("TIMEOUT", 3, environ={"TIMEOUT": "11"}, maximum=10)


def test_it_reads_a_comma_separated_list() -> None:
    environ = {"ALLOWED_HOSTS": " mail.example.com, 10.0.0.5 ,localhost"}
    assert env_list("ALLOWED_HOSTS", [], environ=environ) == [
        "mail.example.com",
        "10.0.0.5",
        "localhost",
    ]


def test_an_empty_list_variable_means_no_items() -> None:
    assert env_list("CSRF_TRUSTED_ORIGINS", ["x"], environ={"CSRF_TRUSTED_ORIGINS": " "}) == []


def test_an_empty_list_item_is_an_error() -> None:
    with pytest.raises(EnvironmentError_, match="empty item"):
        env_list("ALLOWED_HOSTS", [], environ={"ALLOWED_HOSTS": "a,,b"})


def test_it_accepts_postgresql_and_sqlite_urls() -> None:
    postgres = _database("postgres://relay:secret@db.example.com:5432/smtpadmin")
    assert postgres["ENGINE"] == "django.db.backends.postgresql"
    assert postgres["NAME"] == "smtpadmin"
    sqlite = _database("sqlite:////tmp/smtpadmin.sqlite3")
    assert sqlite["ENGINE"] == "django.db.backends.sqlite3"
    assert sqlite["CONN_MAX_AGE"] == 0


@pytest.mark.parametrize(
    "url", ["mysql://root@127.0.0.1/smtpadmin", "oracle://u:p@h/db", "nosuchdb://x/y"]
)
def test_an_unsupported_database_url_is_an_error(url: str) -> None:
    with pytest.raises(EnvironmentError_, match="DATABASE_URL"):
        _database(url)
