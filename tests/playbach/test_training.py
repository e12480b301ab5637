"""Training jobs in Redis (single and cluster): one claim per job, cancel, the lost job of a
worker that died or restarted failed with why, files dropped when a job ends."""

from __future__ import annotations

import asyncio
import time

from playbach import service, streams
from playbach.training import JOBS_KEPT, WORKER_LEASE_MS, JobBook, TrainJob
from tests.conftest import BOTH

pytestmark = BOTH


def job(jid: str, name: str = "mine", **kw) -> TrainJob:
    return TrainJob(id=jid, name=name, preset="tiny", files=["a.mid"], **kw)


def test_a_job_is_claimed_once_oldest_first_and_its_files_go_when_it_ends(redis_url, redis):
    async def scenario():
        book = JobBook(service.client(redis_url))
        await book.create(job("j1", created=1.0), {"a.mid": b"MThd1"})
        await book.create(job("j2", created=2.0), {"a.mid": b"MThd2"})
        claims = await asyncio.gather(*(book.claim(f"w{i}") for i in range(4)))
        taken = sorted(c.id for c in claims if c)
        assert taken == ["j1", "j2"]  # four workers racing: each job once
        assert (await book.files("j1")) == {"a.mid": b"MThd1"}
        await book.finish("j1", "done", model="mine")
        assert await book.files("j1") == {} and (await book.get("j1")).state == "done"
        assert await book.finish("j1", "failed", "late") is None  # an ended job stays ended
        kinds = [(p.kind, p.state) for _, p in await book.progress("j1")]
        assert kinds == [("state", "queued"), ("state", "running"), ("state", "done")]
    asyncio.run(scenario())


def test_cancel_ends_a_queued_job_now_and_asks_a_running_one(redis_url, redis):
    async def scenario():
        book = JobBook(service.client(redis_url))
        await book.create(job("q1"), {})
        assert (await book.cancel("q1")).state == "cancelled"
        assert await book.claim("w") is None  # a cancelled job is never started
        await book.create(job("r1"), {})
        await book.claim("w")
        asked = await book.cancel("r1")
        assert asked.state == "running" and asked.cancel  # its worker stops it
    asyncio.run(scenario())


def test_the_job_of_a_worker_that_died_or_restarted_fails_with_the_reason(redis_url, redis):
    async def scenario():
        book = JobBook(service.client(redis_url))
        for jid in ("k1", "k2"):
            await book.create(job(jid, name=jid), {})
        await book.beat("alive")
        await book.beat("dead")
        assert (await book.claim("dead")).id == "k1"
        assert (await book.claim("alive")).id == "k2"
        await book.change("k1", lambda j: j.model_copy(update={"epoch": 2, "epochs": 3}))
        assert await book.reap() == []  # both beat just now
        old = time.time() * 1000 - WORKER_LEASE_MS - 1
        await book.redis.zadd(streams.replicas(streams.TRAINER), {"dead": old})
        [lost] = await book.reap()
        assert lost.id == "k1" and lost.state == "failed"
        assert "dead stopped answering" in lost.reason and "epoch 2 of 3" in lost.reason
        [again] = await book.reap(restarted="alive")  # same id, new process: its job is lost
        assert again.id == "k2" and "alive restarted" in again.reason
    asyncio.run(scenario())


def test_only_the_newest_jobs_are_kept_and_a_live_one_never_goes(redis_url, redis):
    async def scenario():
        book = JobBook(service.client(redis_url))
        await book.create(job("live", created=0.5), {})
        for i in range(JOBS_KEPT + 2):
            await book.create(job(f"old{i}", created=1.0 + i), {})
            await book.finish(f"old{i}", "done")
        ids = await book.ids()
        assert "live" in ids and "old0" not in ids and len(ids) == JOBS_KEPT + 1
        assert not redis.exists(streams.train_progress("old0"))
    asyncio.run(scenario())
