"""The gateway's REST API, with errors turned into sentences a listener can read."""

from __future__ import annotations

import time
from typing import Any

import httpx


class GatewayError(Exception):
    """Something the gateway refused, or could not be asked; the message is for the user."""


class Gateway:
    def __init__(self, url: str, timeout: float = 5.0, token: str | None = None) -> None:
        self.url = url
        self.token = token
        self.admin = token is not None  # else a guest session, or none yet
        self.listen_token: str | None = None  # for the embedded player: it can only listen
        self.http = httpx.Client(base_url=url, timeout=timeout)

    def _call(self, method: str, path: str, **kwargs) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            res = self.http.request(method, path, headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            raise GatewayError(f"the gateway at {self.url} is unreachable ({exc})") from None
        if res.status_code >= 400:
            try:
                detail = res.json().get("detail", res.text)
            except ValueError:
                detail = res.text
            if res.status_code == 401 and path != "/api/login":
                if not self.admin:
                    self.token = None  # an expired guest session: a new one next time
                detail = "please log in first (or again: your session has expired)"
            raise GatewayError(str(detail))
        return res

    def login(self, username: str, password: str) -> str:
        self.token = self._call("POST", "/api/login",
                                json={"username": username, "password": password}).json()["token"]
        self.listen_token = self._call("POST", "/api/listen-token").json()["token"]
        self.admin = True
        return self.token

    def logout(self) -> None:
        self.token = self.listen_token = None
        self.admin = False

    def as_guest(self) -> None:
        """A guest session of this visitor's own, if it has none: it may make channels and
        change those."""
        if self.token is None:
            self.token = self._call("POST", "/api/guest").json()["token"]

    def ping(self) -> dict[str, Any]:
        t = time.perf_counter()
        body = self._call("GET", "/api/ping").json()
        body["round_trip_ms"] = (time.perf_counter() - t) * 1000
        return body

    def channels(self) -> list[dict[str, Any]]:
        return self._call("GET", "/api/channels").json()

    def channel(self, cid: str) -> dict[str, Any]:
        return self._call("GET", f"/api/channels/{cid}").json()

    def create_channel(self, **params: Any) -> dict[str, Any]:
        return self._call("POST", "/api/channels", json=params).json()

    def update(self, cid: str, **change: Any) -> dict[str, Any]:
        return self._call("PATCH", f"/api/channels/{cid}", json=change).json()

    def delete(self, cid: str) -> None:
        self._call("DELETE", f"/api/channels/{cid}")

    def models(self) -> list[dict[str, Any]]:
        return self._call("GET", "/api/models").json()

    def instruments(self) -> list[dict[str, Any]]:
        return self._call("GET", "/api/instruments").json()

    def tone(self, cid: str) -> None:
        self._call("POST", f"/api/channels/{cid}/tone")

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "/api/stats").json()

    # --- training ---------------------------------------------------------------------------

    def model(self, name: str) -> dict[str, Any]:
        return self._call("GET", f"/api/models/{name}").json()

    def train_options(self) -> dict[str, Any]:
        return self._call("GET", "/api/train/options").json()

    def train(self, name: str, preset: str, corpus: str | None = None,
              files: list[tuple[str, bytes]] = ()) -> dict[str, Any]:
        """Queue a job; uploads can be large, so this waits longer than other calls."""
        data = {"name": name, "preset": preset, **({"corpus": corpus} if corpus else {})}
        parts = [("files", (n, b, "application/octet-stream")) for n, b in files]
        return self._call("POST", "/api/train/jobs", data=data, files=parts or None,
                          timeout=120).json()

    def train_jobs(self) -> list[dict[str, Any]]:
        return self._call("GET", "/api/train/jobs").json()

    def train_job(self, jid: str) -> dict[str, Any]:
        return self._call("GET", f"/api/train/jobs/{jid}").json()

    def cancel_job(self, jid: str) -> dict[str, Any]:
        return self._call("POST", f"/api/train/jobs/{jid}/cancel").json()
