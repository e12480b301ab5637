"""Credentials shared by gateway replicas through a real redis-server, and secrets a compose
tool left unexpanded refused at start."""

from __future__ import annotations

import asyncio
import re

import pytest
from redis.asyncio import Redis

from gateway.credentials import Credentials
from playbach import streams

PRINTED = re.compile(r"log in as admin / (\S+) ")


def replicas(redis_url: str, n: int, capsys) -> tuple[list[Credentials], list[str]]:
    """n unconfigured replicas refreshed concurrently; the passwords they printed."""
    async def start() -> list[Credentials]:
        client = Redis.from_url(redis_url)
        made = [Credentials("admin", None, None) for _ in range(n)]
        await asyncio.gather(*(c.refresh(client) for c in made))
        await client.aclose()
        return made

    made = asyncio.run(start())
    return made, PRINTED.findall(capsys.readouterr().out)


def test_unconfigured_replicas_agree_and_the_password_is_printed_once(redis, redis_url,
                                                                        capsys):
    made, printed = replicas(redis_url, 4, capsys)
    assert len(printed) == 1, printed  # one replica made it; the others read it
    [password] = printed
    assert len({c.token_secret for c in made}) == 1 and len(made[0].token_secret) == 64
    assert all(c.ready and c.check("admin", password) for c in made)
    assert not any(c.check("admin", password + "x") or c.check("root", password) for c in made)
    assert password.encode() not in redis.get(streams.ADMIN_PASSWORD)  # only its hash


def test_a_redis_that_lost_its_data_gets_new_ones_everyone_follows(redis, redis_url, capsys):
    made, [old] = replicas(redis_url, 2, capsys)
    old_key = made[0].token_secret
    redis.flushall()

    async def refresh() -> None:
        client = Redis.from_url(redis_url)
        for c in made:
            await c.refresh(client)
        await client.aclose()

    asyncio.run(refresh())
    [new] = PRINTED.findall(capsys.readouterr().out)
    assert new != old and made[0].token_secret != old_key
    assert made[0].token_secret == made[1].token_secret
    assert all(c.check("admin", new) and not c.check("admin", old) for c in made)


def test_configured_secrets_are_used_and_nothing_is_written(redis, redis_url, capsys):
    async def start() -> Credentials:
        client = Redis.from_url(redis_url)
        c = Credentials("admin", "pw-from-env", "key-from-env")
        await c.refresh(client)
        await client.aclose()
        return c

    c = asyncio.run(start())
    assert c.token_secret == "key-from-env" and c.check("admin", "pw-from-env")
    assert redis.keys("*") == [] and capsys.readouterr().out == ""


@pytest.mark.parametrize("name", ["ADMIN_PASSWORD", "TOKEN_SECRET", "REDIS_URL"])
def test_an_unexpanded_variable_is_refused_in_one_line(name, tmp_path, monkeypatch, capsys):
    from gateway.settings import GatewaySettings
    from playbach.settings import load

    monkeypatch.setenv("MODELS_DIR", str(tmp_path))
    monkeypatch.setenv(name, f"${{{name}:-}}")  # what podman-compose 1.0.3 passed on
    with pytest.raises(SystemExit):
        load(GatewaySettings, "gateway")
    err = capsys.readouterr().err
    assert err.startswith(f"gateway: bad setting: {name}="), err
    assert f"an unexpanded ${{{name}:-}}" in err and len(err.strip().splitlines()) == 1


def test_a_secret_is_named_in_the_error_but_not_shown(tmp_path, monkeypatch, capsys):
    from gateway.settings import GatewaySettings
    from playbach.settings import load

    monkeypatch.setenv("MODELS_DIR", str(tmp_path))
    monkeypatch.setenv("ADMIN_PASSWORD", "real-s3cret-${HOME}-part")  # `$` in a real password
    with pytest.raises(SystemExit):
        load(GatewaySettings, "gateway")
    err = capsys.readouterr().err
    assert err.startswith("gateway: bad setting: ADMIN_PASSWORD='<hidden>'"), err
    assert "s3cret" not in err and "${HOME}" in err


@pytest.mark.parametrize("name, value", [("ADMIN_PASSWORD", "change-me"),
                                         ("ADMIN_PASSWORD", "short-pw"),
                                         ("ADMIN_PASSWORD", "Password1234"),
                                         ("ADMIN_PASSWORD", "aaaaaaaaaaaa"),
                                         ("ADMIN_PASSWORD", "qwertyuiop123"),
                                         ("ADMIN_PASSWORD", "playbachadmin1"),
                                         ("TOKEN_SECRET", "not-32-characters-long")])
def test_a_guessable_secret_is_refused(name, value, tmp_path, monkeypatch, capsys):
    from gateway.settings import GatewaySettings
    from playbach.settings import load

    monkeypatch.setenv("MODELS_DIR", str(tmp_path))
    monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit):
        load(GatewaySettings, "gateway")
    err = capsys.readouterr().err
    assert err.startswith(f"gateway: bad setting: {name}='<hidden>'") and value not in err
    assert "too easy to guess" in err


def test_a_guessable_password_in_a_file_is_refused_and_a_strong_one_taken(tmp_path, monkeypatch,
                                                                          capsys):
    from gateway.settings import GatewaySettings
    from playbach.settings import load

    monkeypatch.setenv("MODELS_DIR", str(tmp_path))
    monkeypatch.delenv("ADMIN_PASSWORD", raising=False)
    secret = tmp_path / "admin"
    secret.write_text("Password1234\n")
    monkeypatch.setenv("ADMIN_PASSWORD_FILE", str(secret))
    with pytest.raises(SystemExit):
        load(GatewaySettings, "gateway")
    err = capsys.readouterr().err
    assert "ADMIN_PASSWORD_FILE is too easy to guess" in err and "Password1234" not in err
    secret.write_text("violin lantern oyster 1723\n")
    assert load(GatewaySettings, "gateway").admin_password.get_secret_value() == (
        "violin lantern oyster 1723")
