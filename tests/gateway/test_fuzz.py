"""The API description fuzzed by schemathesis against a real gateway on a real Redis: no 5xx,
and every answer documented (status, body schema, content type, headers).

One test per operation; derandomized, so a failure comes back on every run. To dig deeper,
run the CLI on a running gateway: `st run http://127.0.0.1:8000/openapi.json -c all -n 300
-H "Authorization: Bearer <token>"`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import schemathesis
from hypothesis import HealthCheck, reject, settings
from redis import Redis
from schemathesis.specs.openapi.checks import positive_data_acceptance

from gateway.app import create_app
from gateway.settings import GatewaySettings
from playbach import streams
from tests.conftest import SHIPPED, Services, login

# Built from the code the gateway serves it from: parametrize needs it before a server runs
# (schemathesis.pytest.from_fixture would wait for one, but breaks on pytest 9: it sets the
# removed Function._nodeid).
SCHEMA = schemathesis.openapi.from_dict(create_app(GatewaySettings(models_dir=SHIPPED)).openapi())
EXAMPLES = 100  # per operation, on top of schemathesis' coverage cases
STREAMS = {f"/stream/{{cid}}.{fmt}" for fmt in ("wav", "ogg", "mp3")}
LIMITS = (streams.limit("*", "*"),)
# Every check but one: negative_data_rejection wants `"seed": false` or `"bpm": "84"` refused,
# and pydantic's lax mode takes them (as 0 and 84.0) on purpose: ChannelParams, shared with
# inference and synth, also reads them from Redis strings, and a client may send 19.0.
SCHEMA.config.checks.update(excluded_check_names=["negative_data_rejection"])


@dataclass
class Target:
    url: str
    auth: dict[str, str]
    redis: Redis

    def forget_limits(self) -> None:
        """Each case as from a new address. The login limit slows every attempt after the
        first (up to 5 s each), and the fuzzer makes hundreds: the limit itself is tested in
        tests/live/test_security.py."""
        for pattern in LIMITS:
            for key in self.redis.scan_iter(pattern):
                self.redis.delete(key)


@pytest.fixture(scope="module")
def target(redis_url, tmp_path_factory) -> Iterator[Target]:
    """One gateway for every operation (a gateway per operation would take longer than the
    fuzzing), listening only with a token, so the fuzzer meets those 401s too (ignored_auth
    tries every protected operation without the token). No inference or synth: without audio
    the answers do not depend on timing."""
    redis = Redis.from_url(redis_url)
    redis.flushall()
    services = Services(redis_url, tmp_path_factory.mktemp("fuzz"))
    url = services.gateway(PUBLIC_LISTENING="false")
    try:
        yield Target(url, login(url), redis)
    finally:
        services.stop()


@SCHEMA.parametrize()
@settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
def test_the_api_answers_as_documented(case, target):
    if case.operation.path in STREAMS and target.redis.exists(
            streams.channel(str(case.path_parameters.get("cid")))):
        reject()  # a channel that exists streams without end; tests/live/test_stream.py
    target.forget_limits()
    # An upload's files must be MIDI, which a schema cannot say (its bytes are "binary"): the
    # fuzzer's PNGs are rightly refused with a 422 naming each file (tests/gateway/
    # test_uploads.py). Every other check holds there too.
    upload = (case.operation.method.upper(), case.operation.path) == ("POST", "/api/train/jobs")
    case.call_and_validate(base_url=target.url, headers=target.auth, timeout=10,
                           excluded_checks=[positive_data_acceptance] if upload else None)

