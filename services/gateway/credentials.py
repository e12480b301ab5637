"""The admin password and the token key, from settings or, when unset, made once in Redis.

Several gateway replicas must agree without being configured: the first to start writes a
random token key and a generated admin password with SET NX; every replica then reads the
same ones. The password is printed once, by the replica that made it, and Redis keeps only
its salted scrypt hash. Re-read every keeper step, so a Redis that lost its data gets new
ones (printed again) and every replica moves to them together."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from redis.asyncio import Redis

from playbach import streams
from playbach.streams import text

SCRYPT = {"n": 2**14, "r": 8, "p": 1}  # ~20 ms a check: a guess is costly, a login is not
PASSWORD_MIN = 12
STRONG_ENOUGH = 3  # zxcvbn's score: "safely unguessable" (about 10^8 guesses or more)
KNOWN_WORDS = ["playbach", "play bach", "bach", "radio", "cello", "admin", "password"]


def weakness(password: str, user: str) -> str | None:
    """Why a chosen admin password is too easy to guess, or None. Length is not enough
    ("aaaaaaaaaaaa", "Password1234"): zxcvbn, a maintained estimator, counts the guesses
    of an attacker who tries common passwords, words, names, keyboard patterns and
    repeats first, with this project's own words among them."""
    from zxcvbn import zxcvbn

    if len(password) < PASSWORD_MIN:
        return f"shorter than {PASSWORD_MIN} characters"
    found = zxcvbn(password[:100], user_inputs=[*KNOWN_WORDS, user])
    if found["score"] >= STRONG_ENOUGH:
        return None
    said = found["feedback"]["warning"] or "a pattern an attacker tries early"
    hints = [f"{h[:1].lower()}{h[1:].rstrip('.')}" for h in found["feedback"]["suggestions"][:1]]
    guesses = f"found in about 10^{found['guesses_log10']:.0f} guesses"
    return f"{said[:1].lower()}{said[1:].rstrip('.')} ({'; '.join([guesses, *hints])})"


def same(given: str, expected: str) -> bool:
    """Constant-time comparison of any text (compare_digest refuses non-ASCII str)."""
    return hmac.compare_digest(given.encode(), expected.encode())


def hashed(password: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, **SCRYPT)
    return f"scrypt${salt.hex()}${digest.hex()}"


def matches(password: str, stored: str) -> bool:
    try:
        _, salt, _digest = stored.split("$")
        return same(hashed(password, bytes.fromhex(salt)), stored)
    except ValueError:  # not a hash we wrote
        return False


class Credentials:
    def __init__(self, admin_user: str, admin_password: str | None,
                 token_secret: str | None) -> None:
        self.admin_user = admin_user
        self.password, self.password_hash = admin_password, None
        self.fixed_secret = token_secret
        self.token_secret: str | None = token_secret  # None until read from Redis

    @property
    def ready(self) -> bool:
        return self.token_secret is not None and \
            (self.password is not None or self.password_hash is not None)

    def check(self, user: str, password: str) -> bool:
        same_user = same(user, self.admin_user)
        if self.password is not None:
            return same(password, self.password) and same_user
        return self.password_hash is not None and matches(password, self.password_hash) \
            and same_user

    async def refresh(self, redis: Redis) -> None:
        """Read the shared key and password hash, creating them if nobody has yet. (Called
        every second: a read, and the ~20 ms of scrypt only when there is no hash.)"""
        if self.fixed_secret is None:
            self.token_secret = text(await redis.get(streams.TOKEN_SECRET))
            if self.token_secret is None:
                await redis.set(streams.TOKEN_SECRET, secrets.token_hex(32), nx=True)
                self.token_secret = text(await redis.get(streams.TOKEN_SECRET))
        if self.password is None:
            self.password_hash = text(await redis.get(streams.ADMIN_PASSWORD))
            if self.password_hash is None:
                await self._generated_password(redis)

    async def _generated_password(self, redis: Redis) -> None:
        password = secrets.token_urlsafe(12)
        if await redis.set(streams.ADMIN_PASSWORD, hashed(password), nx=True):
            # Printed, not logged at a level one might filter: it is shown this once.
            print(f"gateway: no ADMIN_PASSWORD set; generated one: log in as "
                  f"{self.admin_user} / {password} (shown once; Redis keeps only its hash; "
                  f"set ADMIN_PASSWORD to choose one)", flush=True)
        self.password_hash = text(await redis.get(streams.ADMIN_PASSWORD))
