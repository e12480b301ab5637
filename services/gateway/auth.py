"""Signed, expiring tokens (HMAC-SHA256), a login limit that cannot be raced, and rate limits.

Tokens carry a scope: ``admin`` may change anything; ``guest`` is a listener's own session
(``POST /api/guest``, no password), which may make channels and change only those; ``listen``
may only listen (the control room gives the embedded player one of those, never its admin
token). Limits are counted in Redis with INCR, atomically and shared by every gateway
replica, per client address: a flood from one address never locks the admin out from
another. Behind a reverse proxy the address is the one the proxy names, if the proxy is in
TRUSTED_PROXIES (uvicorn applies it); otherwise every client would share the proxy's."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import time
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import Depends, HTTPException, Request, WebSocket, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from gateway.credentials import Credentials
from playbach import streams
from playbach.schemas import ChannelAccess

log = logging.getLogger("gateway")
FAIL_WINDOW_S = 300
FAIL_LIMIT = 20  # login attempts per address per window, then 429 until the window passes
DOWNLOADS_PER_MINUTE = 10
GUEST_PREFIX = "guest-"
Scope = Literal["admin", "listen", "guest"]


@dataclass(frozen=True)
class Identity:
    """Who a request comes from: the admin, or a guest session."""

    name: str
    admin: bool

    def may_change(self, access: ChannelAccess) -> bool:
        return self.admin or access.owner == self.name


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(secret: str, user: str, ttl_s: int, scope: Scope = "admin") -> tuple[str, int]:
    expires = int(time.time()) + ttl_s
    body = _b64(json.dumps({"sub": user, "exp": expires, "scope": scope}).encode())
    mac = hmac.new(secret.encode(), body.encode(), hashlib.sha256).digest()
    return f"{body}.{_b64(mac)}", expires


def claims(secret: str, token: str, scopes: tuple[Scope, ...]) -> tuple[str, Scope] | None:
    """The user the token was signed for and its scope, or None if it is forged, malformed,
    expired or of another scope."""
    try:
        body, mac = token.split(".")
        good = hmac.new(secret.encode(), body.encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(good, _unb64(mac)):
            return None
        said = json.loads(_unb64(body))
        scope = said.get("scope", "admin")
        if scope not in scopes or said["exp"] <= time.time():
            return None
        return str(said["sub"]), scope
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def verify(secret: str, token: str, scopes: tuple[Scope, ...] = ("admin",)) -> str | None:
    """The user the token was signed for, or None (see ``claims``)."""
    found = claims(secret, token, scopes)
    return found[0] if found else None


def client_address(request: Request) -> str:
    """The peer, or the address a trusted proxy gave (uvicorn applies TRUSTED_PROXIES)."""
    return request.client.host if request.client else "unknown"


_warned: set[str] = set()


def warn_of_an_untrusted_proxy(request: Request, trusted: str) -> None:
    """Once per peer: a login came with X-Forwarded-For from a peer that is not trusted. If
    that peer is the site's own reverse proxy, every client shares its address, and one
    attacker's failures would lock the admin out from everywhere."""
    peer = client_address(request)
    if "x-forwarded-for" in request.headers and peer not in _warned and not trusted.strip():
        _warned.add(peer)
        log.warning("a login came through %s with X-Forwarded-For, and TRUSTED_PROXIES is "
                    "empty: if %s is your reverse proxy, every client shares its address for "
                    "the login limit; set TRUSTED_PROXIES=%s", peer, peer, peer)


async def count(redis, key: str, window_s: int) -> int:
    """Add one to a counter that lives ``window_s`` from its first use; the new count."""
    pipe = redis.pipeline(transaction=True)
    pipe.incr(key)
    pipe.expire(key, window_s, nx=True)
    value, _ = await pipe.execute()
    return int(value)


async def login_attempt(redis, client: str) -> None:
    """Count this attempt before the password is checked (so a burst of parallel guesses is
    counted too); past FAIL_LIMIT, 429. Each attempt after the first waits longer."""
    key = streams.limit("login", client)
    attempts = await count(redis, key, FAIL_WINDOW_S)
    if attempts > FAIL_LIMIT:
        ttl = await redis.ttl(key)
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS,
                            "too many login attempts from your address; try again later",
                            headers={"Retry-After": str(max(ttl, 1))})
    if attempts > 1:
        await asyncio.sleep(min(0.2 * 2 ** (attempts - 2), 5.0))


async def login_succeeded(redis, client: str) -> None:
    await redis.delete(streams.limit("login", client))


async def download_allowed(redis, client: str) -> None:
    """At most DOWNLOADS_PER_MINUTE downloads of recent audio per address."""
    key = streams.limit("downloads", client)
    if await count(redis, key, 60) > DOWNLOADS_PER_MINUTE:
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS,
                            f"at most {DOWNLOADS_PER_MINUTE} downloads a minute; try again later",
                            headers={"Retry-After": str(max(await redis.ttl(key), 1))})


bearer = HTTPBearer(auto_error=False)


def token_user(conn: Request | WebSocket, token: str | None,
               scopes: tuple[Scope, ...] = ("admin",)) -> str | None:
    found = token_claims(conn, token, scopes)
    return found[0] if found else None


def token_claims(conn: Request | WebSocket, token: str | None,
                 scopes: tuple[Scope, ...]) -> tuple[str, Scope] | None:
    secret = conn.app.state.credentials.token_secret
    if not token or secret is None:  # no key yet (Redis not reached since start): nobody
        return None
    return claims(secret, token, scopes)


def ready_credentials(request: Request) -> Credentials:
    """The credentials, or 503 while they are still to be read from Redis."""
    credentials = request.app.state.credentials
    if not credentials.ready:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                            "starting: the token key is not read from Redis yet; try again",
                            headers={"Retry-After": "1"})
    return credentials


LOG_IN = "log in first: POST /api/login, then send 'Authorization: Bearer <token>'"
Bearer = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


async def require_admin(request: Request, cred: Bearer) -> str:
    """Dependency for what only the admin may do: a valid admin bearer token."""
    user = token_user(request, cred.credentials if cred else None)
    if user is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, LOG_IN,
                            headers={"WWW-Authenticate": "Bearer"})
    return user


async def optional_user(request: Request, cred: Bearer) -> Identity | None:
    """The admin or a guest, from a bearer token; None without one (or with a bad one)."""
    found = token_claims(request, cred.credentials if cred else None, ("admin", "guest"))
    return Identity(found[0], found[1] == "admin") if found else None


async def require_user(request: Request,
                       who: Annotated[Identity | None, Depends(optional_user)]) -> Identity:
    """Dependency for a change to a channel: the admin, or a guest session (which may change
    only its own channels: the route checks)."""
    if who is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED,
                            LOG_IN + "; or POST /api/guest for a session of your own",
                            headers={"WWW-Authenticate": "Bearer"})
    return who


async def guest_allowed(redis, client: str, per_hour: int) -> None:
    """At most ``per_hour`` guest sessions per address an hour (each may make channels)."""
    key = streams.limit("guests", client)
    if await count(redis, key, 3600) > per_hour:
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS,
                            f"at most {per_hour} guest sessions an hour from one address; "
                            "keep the one you have, or try again later",
                            headers={"Retry-After": str(max(await redis.ttl(key), 1))})
