"""Training through the gateway's API: real uploads, a real trainer worker with TensorFlow,
progress over the WebSocket, cancel, a worker killed mid-job, each upload limit. (The whole
way through, from the control room's Train page to the new model on the radio, is in
test_ui_browser.py.)"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import httpx
import pytest
import websockets

from tests.conftest import CELLO, login, own_models, run, wait_for_value

MOVEMENTS = ("cs1-1pre.mid", "cs1-2all.mid", "cs2-1pre.mid")
CORRUPT = b"MThd\x00\x00\x00\x06" + b"garbage" * 8

# A cancel lands at the next batch, and the first one builds TensorFlow's graph: 20 s on an
# idle machine, more on a busy one. The grace before a forced stop must not decide how a
# cancel ends here.
WORKER_ENV = {"CANCEL_GRACE_S": "180"}


def upload(extra: list[tuple[str, bytes]] = ()) -> list[tuple[str, tuple[str, bytes, str]]]:
    parts = [(n, (CELLO / n).read_bytes()) for n in MOVEMENTS] + [("broken.mid", CORRUPT)]
    return [("files", (n, b, "audio/midi")) for n, b in [*parts, *extra]]


@pytest.fixture
def trained(services, tmp_path) -> tuple[str, dict, dict[str, str]]:
    """A gateway and a trainer worker on a models folder of their own."""
    env = own_models(services, tmp_path)
    url = services.gateway()
    services.start("trainer-1", "trainer", "worker", **WORKER_ENV)
    return url, login(url), env


def job(url: str, auth: dict, jid: str) -> dict:
    return httpx.get(f"{url}/api/train/jobs/{jid}", headers=auth).json()


def job_processes(replica: str, command: bytes = b"") -> set[int]:
    """Processes started as (or by) the replica: the worker, its training processes and
    their helpers; only those whose command line holds ``command``, when given."""
    found = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            if f"REPLICA_ID={replica}".encode() in env and command in Path(
                    f"/proc/{pid}/cmdline").read_bytes():
                found.add(int(pid))
        except OSError:
            pass
    return found


def left_behind(env: dict[str, str], job: dict) -> list[str]:
    """What a job that did not publish left on disk: its uploads, its checkpoints, a
    half-built model folder."""
    runs, models = Path(env["RUNS_DIR"]), Path(env["MODELS_DIR"])
    found = [runs / "uploads" / job["id"], runs / "jobs" / job["name"],
             *models.glob(f".staging-{job['name']}@*")]
    return [str(p) for p in found if p.exists()]


def test_a_lost_job_fails_with_why_and_a_cancel_stops_training(trained, services):
    url, auth, env = trained
    token = auth["Authorization"].split()[1]

    # A worker killed (-9) mid-job and started again: the job failed, saying why, and its
    # training process did not outlive the worker.
    lost = httpx.post(f"{url}/api/train/jobs", headers=auth, files=upload(),
                      data={"name": "lost", "preset": "tiny"}).json()
    wait_for_value(lambda: job(url, auth, lost["id"])["job"]["state"] == "running", 30, "a start")
    worker = services.procs["trainer-1"].pid
    wait_for_value(lambda: job_processes("trainer-1") - {worker}, 30, "the training process")
    wait_for_value(lambda: left_behind(env, lost), 30, "the job's files on disk")
    services.kill("trainer-1")
    wait_for_value(lambda: not job_processes("trainer-1"), 10, "the training process to end too")
    services.start("trainer-1", "trainer", "worker", **WORKER_ENV)
    failed = wait_for_value(lambda: (j := job(url, auth, lost["id"])["job"])["state"] == "failed"
                            and j, 30, "the lost job to fail")
    assert "trainer-1 restarted while training it" in failed["reason"]
    wait_for_value(lambda: not left_behind(env, lost), 10, "the lost job's files to go")

    # The training process itself killed (as the kernel's OOM killer would): the worker lives
    # on and fails the job, saying how the process ended.
    died = httpx.post(f"{url}/api/train/jobs", headers=auth, files=upload(),
                      data={"name": "died", "preset": "tiny"}).json()
    wait_for_value(lambda: job(url, auth, died["id"])["job"]["state"] == "running", 30, "a start")
    [child] = wait_for_value(lambda: job_processes("trainer-1", b"spawn_main"), 30, "its process")
    os.kill(child, signal.SIGKILL)
    failed = wait_for_value(lambda: (j := job(url, auth, died["id"])["job"])["state"] == "failed"
                            and j, 30, "the job to fail")
    assert failed["reason"].startswith("the training process died (killed by signal 9")
    assert services.procs["trainer-1"].poll() is None
    assert not left_behind(env, died)

    # Three cello movements, a corrupt MIDI file and a text file, followed over the
    # WebSocket; cancelled once it trains (the first epoch takes seconds: TensorFlow builds
    # its graph), it stops at the next batch and publishes nothing.
    res = httpx.post(f"{url}/api/train/jobs", headers=auth,
                     files=upload([("notes.txt", b"not music")]),
                     data={"name": "to-cancel", "preset": "tiny"})
    assert res.status_code == 201, res.text
    mine = res.json()
    assert mine["skipped"] == [{"file": "notes.txt",
                                "reason": "not a MIDI file (no MThd header)"}]

    async def follow_and_cancel() -> list[dict]:
        ws_url = url.replace("http://", "ws://") + f"/ws/train/{mine['id']}?token={token}"
        messages = []
        async with websockets.connect(ws_url) as ws, httpx.AsyncClient(headers=auth) as http:
            async for text in ws:
                messages.append(json.loads(text))
                if messages[-1].get("message", "").startswith("training on"):
                    cancel = await http.post(f"{url}/api/train/jobs/{mine['id']}/cancel")
                    assert cancel.status_code == 200 and cancel.json()["cancel"]
        return messages

    messages = run(follow_and_cancel())
    assert messages[0]["type"] == "job" and messages[0]["name"] == "to-cancel"
    progress = [m for m in messages if m["type"] == "progress"]
    parsed = [m for m in progress if m["kind"] == "parse"]
    assert parsed[-1]["done"] == parsed[-1]["total"] == 4
    said = [m["message"] for m in progress]
    assert any(m.startswith("skipped broken.mid: ") for m in said), said
    assert (progress[-1]["kind"], progress[-1]["state"]) == ("state", "cancelled")
    ended = job(url, auth, mine["id"])["job"]
    assert ended["state"] == "cancelled" and ended["reason"] == "cancelled by the admin"
    assert "to-cancel" not in {m["name"] for m in httpx.get(f"{url}/api/models").json()}
    assert not left_behind(env, mine)
    assert httpx.get(f"{url}/api/train/jobs", headers={}).status_code == 401


def test_each_upload_limit_refuses_before_anything_is_stored(services, redis):
    url = services.gateway(UPLOAD_MAX_FILES="3", UPLOAD_MAX_MB="0.012", UPLOAD_FILE_MB="0.01")
    auth = login(url)
    small = [("files", (n, (CELLO / n).read_bytes(), "audio/midi"))
             for n in ("cs1-1pre.mid", "cs1-4sar.mid")]  # 4.9 + 3.5 KB

    def post(files=None, data=None, **kw) -> httpx.Response:
        return httpx.post(f"{url}/api/train/jobs", headers=kw.get("headers", auth), files=files,
                          data=data or {"name": "x", "preset": "tiny"})

    assert post(small, headers={}).status_code == 401
    too_many = post(small * 2)
    assert too_many.status_code == 413 and "4 files sent; the limit is at most 3 MIDI files" in (
        too_many.json()["detail"])
    third = (CELLO / "cs4-1pre.mid").read_bytes()[:9000]
    too_big = post([*small, ("files", ("cs4-1pre.mid", third, "audio/midi"))])
    assert too_big.status_code == 413 and "over 0.012 MB of MIDI" in too_big.json()["detail"]
    body = httpx.post(f"{url}/api/train/jobs", headers={**auth, "Content-Type":
                      "multipart/form-data; boundary=x"}, content=b"x" * 1_100_000)
    assert body.status_code == 413 and "(1,100,000 bytes); an upload takes at most 3 MIDI " \
        "files, 0.012 MB in all" in body.json()["detail"]
    not_midi = post([("files", ("notes.txt", b"hello", "text/plain"))])
    assert not_midi.status_code == 422
    assert "no MIDI file to train on (notes.txt: not a MIDI file" in not_midi.json()["detail"]
    one_large = post([("files", ("big.mid", b"MThd" + bytes(20_000), "audio/midi"))])
    assert one_large.status_code == 422 and "big.mid: 0.02 MB, over the 0.01 MB limit per " \
        "file" in one_large.json()["detail"]
    taken = post(small, {"name": "cello-suites", "preset": "tiny"})
    assert taken.status_code == 409 and "exists already" in taken.json()["detail"]
    bad = post(small, {"name": "Bad Name!", "preset": "huge"})
    assert bad.status_code == 422 and "name" in bad.json()["detail"] and "preset" in (
        bad.json()["detail"])
    assert httpx.get(f"{url}/api/train/jobs", headers=auth).json() == []
    assert not [k for k in redis.keys("pb:train:*")], "a refused upload left something stored"
    ok = post(small)
    assert ok.status_code == 201 and len(ok.json()["files"]) == 2
