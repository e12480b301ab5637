"""Signed, expiring tokens (HMAC-SHA256) and a login that slows down repeated failures."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from typing import Annotated

from fastapi import Depends, HTTPException, Request, WebSocket, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

FAIL_WINDOW_S = 300
FAIL_LIMIT = 20  # then 429 until the window passes


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(secret: str, user: str, ttl_s: int) -> tuple[str, int]:
    expires = int(time.time()) + ttl_s
    body = _b64(json.dumps({"sub": user, "exp": expires}).encode())
    mac = hmac.new(secret.encode(), body.encode(), hashlib.sha256).digest()
    return f"{body}.{_b64(mac)}", expires


def verify(secret: str, token: str) -> str | None:
    """The user the token was signed for, or None if it is forged, malformed or expired."""
    try:
        body, mac = token.split(".")
        good = hmac.new(secret.encode(), body.encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(good, _unb64(mac)):
            return None
        claims = json.loads(_unb64(body))
        return claims["sub"] if claims["exp"] > time.time() else None
    except (ValueError, KeyError, TypeError):
        return None


async def slow_down_failures(redis, client: str) -> None:
    """Each failed login from one address waits longer (0.2 s doubling, at most 5 s);
    past FAIL_LIMIT failures in five minutes, 429."""
    key = f"pb:login-fail:{client}"
    failures = int(await redis.get(key) or 0)
    if failures >= FAIL_LIMIT:
        ttl = await redis.ttl(key)
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS,
                            "too many failed logins; try again later",
                            headers={"Retry-After": str(max(ttl, 1))})
    if failures:
        await asyncio.sleep(min(0.2 * 2 ** (failures - 1), 5.0))


async def record_failure(redis, client: str) -> None:
    key = f"pb:login-fail:{client}"
    await redis.incr(key)
    await redis.expire(key, FAIL_WINDOW_S)


bearer = HTTPBearer(auto_error=False)


def token_user(request: Request | WebSocket, token: str | None) -> str | None:
    if not token:
        return None
    return verify(request.app.state.settings.token_secret.get_secret_value(), token)


async def require_user(
    request: Request, cred: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> str:
    """Dependency for every change: a valid ``Authorization: Bearer <token>``."""
    user = token_user(request, cred.credentials if cred else None)
    if user is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED,
                            "log in first: POST /api/login, then send 'Authorization: Bearer "
                            "<token>'", headers={"WWW-Authenticate": "Bearer"})
    return user
