"""``python -m trainer worker``: takes training jobs from Redis, one at a time, and runs each
in a process of its own (:mod:`trainer.jobrun`), passing its progress on to the job's stream.

While a job runs, the worker beats (so others know the job is alive), watches for a cancel,
and ends the job with what the process reported, or with why it died. Started again under
the same replica id, it first fails the job it was running (lost with the old process).

Nothing a job leaves on disk outlives it: its uploads go when it ends, and so do the
checkpoints and half-built model folder of one that did not publish. Between jobs the
worker sweeps what jobs that ended elsewhere left (a worker killed with -9 cleans nothing;
its job is failed by whoever notices, and its files by the next sweep here)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from redis.asyncio import Redis

from playbach import service
from playbach.modeldir import staging_prefix
from playbach.training import FINAL, JobBook, TrainJob, TrainProgress
from trainer import jobrun
from trainer.settings import WorkerSettings

log = logging.getLogger("trainer")


class Worker:
    def __init__(self, redis: Redis, settings: WorkerSettings, stop: asyncio.Event,
                 watch: service.RedisWatch) -> None:
        self.book, self.settings, self.stop, self.watch = JobBook(redis), settings, stop, watch
        self.health = service.Health(watch)
        self.restarted: str | None = settings.replica_id  # reaped once, at the first tick

    async def run(self) -> None:
        s = self.settings
        server = await self.health.serve(s.health_host, s.health_port) if s.health_port else None
        log.info("trainer worker %s waiting for jobs", s.replica_id)
        try:
            await service.tick_until(self.stop, s.poll_s, self.tick, self.watch)
        finally:
            if server:
                server.close()

    async def tick(self) -> None:
        self.health.beat = time.monotonic()
        await self.book.beat(self.settings.replica_id)
        for job in await self.book.reap(self.restarted):
            log.warning("job %s (%s): failed: %s", job.id, job.name, job.reason)
        self.restarted = None
        await self.sweep()
        job = await self.book.claim(self.settings.replica_id)
        if job is not None:
            await self.train(job)

    async def persist(self, step: Callable[[], Awaitable[object]]) -> object:
        """A write that must happen, through a Redis outage (until we are stopped)."""
        while True:
            try:
                result = await step()
            except service.REDIS_DOWN as exc:
                if self.stop.is_set():
                    raise
                await asyncio.sleep(self.watch.failed(exc))
                continue
            self.watch.ok()
            return result

    async def train(self, job: TrainJob) -> None:
        log.info("job %s: training %s (%s, preset %s)", job.id, job.name, job.source, job.preset)
        folder = self.settings.runs_dir / "uploads" / job.id
        result = {"state": "failed", "reason": "the trainer worker failed"}
        try:
            await self.unpack(job, folder)
            result = await self.supervise(job, folder)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
            if result["state"] != "done":
                self.scrap(job.name)
        extra = {}
        if result.get("model"):
            extra["model"] = result["model"]
        if result.get("skipped"):
            extra["skipped"] = [*job.skipped, *result["skipped"]]
        await self.persist(lambda: self.book.finish(job.id, result["state"], result.get("reason"),
                                                    **extra))
        log.info("job %s (%s): %s%s", job.id, job.name, result["state"],
                 f": {result['reason']}" if result.get("reason") else "")

    def scrap(self, name: str) -> None:
        """What a job that did not publish ``name`` left: its checkpoints and logs, and the
        staging folder of a model it did not finish publishing."""
        shutil.rmtree(self.settings.runs_dir / "jobs" / name, ignore_errors=True)
        for staging in self.settings.models_dir.glob(f"{staging_prefix(name)}*"):
            shutil.rmtree(staging, ignore_errors=True)

    async def sweep(self) -> None:
        """Remove the uploads of jobs that ended (or are forgotten), and the scratch of
        those that did not publish, unless a job of that name is live again."""
        uploads = self.settings.runs_dir / "uploads"
        for folder in sorted(uploads.iterdir()) if uploads.is_dir() else ():
            job = await self.book.get(folder.name)
            if job is not None and job.state not in FINAL:
                continue  # queued, or running on a worker sharing this disk
            shutil.rmtree(folder, ignore_errors=True)
            live = {j.name for j in await self.book.all() if j.state not in FINAL}
            if job is not None and job.state != "done" and job.name not in live:
                self.scrap(job.name)
            log.info("swept the files of job %s", folder.name)

    async def unpack(self, job: TrainJob, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        if job.corpus:
            return
        for name, data in (await self.persist(lambda: self.book.files(job.id))).items():
            (folder / Path(name).name).write_bytes(data)

    async def supervise(self, job: TrainJob, folder: Path) -> dict:
        """Run the job's process to its end; its result, or why it has none."""
        # spawn: no Redis connection or thread inherited; not daemonic: it parses in processes
        ctx = multiprocessing.get_context("spawn")
        reader, writer = ctx.Pipe(duplex=False)
        cancel = ctx.Event()
        spec = jobrun.Spec(job.id, job.name, job.preset, job.corpus, folder)
        proc = ctx.Process(target=jobrun.main, args=(spec, writer, cancel),
                           name=f"job-{job.id}")
        proc.start()
        writer.close()
        result, kill_at, last_look, ended = None, None, 0.0, False
        try:
            while result is None and not ended:
                while reader.poll():
                    try:
                        message = reader.recv()
                    except EOFError:  # the process is gone (its end of the pipe closed)
                        ended = True
                        break
                    if "result" in message:
                        result = message["result"]
                    else:
                        await self.passed_on(job, TrainProgress.model_validate_json(
                            message["progress"]))
                if result is not None or ended:
                    break
                if time.monotonic() - last_look > 1:  # beat, and look for a cancel
                    last_look = time.monotonic()
                    self.health.beat = last_look
                    if await self.cancelled(job) and kill_at is None:
                        cancel.set()
                        kill_at = last_look + self.settings.cancel_grace_s
                if self.stop.is_set():
                    return {"state": "failed", "reason": "the trainer worker was stopped while "
                                                         "training it; start it again"}
                if kill_at is not None and time.monotonic() > kill_at:
                    return {"state": "cancelled", "reason": "cancelled by the admin (stopped "
                                                            "by force)"}
                await asyncio.sleep(0.2)
        finally:
            if proc.is_alive():
                proc.terminate()
                await asyncio.to_thread(proc.join, 5)
                if proc.is_alive():
                    proc.kill()
            await asyncio.to_thread(proc.join, 5)
            reader.close()
        if result is None:
            code = proc.exitcode
            why = f"killed by signal {-code}" if code and code < 0 else f"exit code {code}"
            return {"state": "failed", "reason": f"the training process died ({why}; out of "
                                                 "memory?)"}
        return result

    async def cancelled(self, job: TrainJob) -> bool:
        """Whether the admin asked to stop it (a beat goes with each look). Redis away: not
        known, so no (the watch logs it)."""
        found: list[TrainJob | None] = []

        async def look() -> None:
            await self.book.beat(self.settings.replica_id)
            found.append(await self.book.get(job.id))

        await self.watch.guard(look)
        return bool(found and found[0] and found[0].cancel)

    async def passed_on(self, job: TrainJob, progress: TrainProgress) -> None:
        if progress.kind == "epoch":
            await self.persist(lambda: self.book.change(job.id, lambda j: j.model_copy(
                update={"epoch": progress.epoch, "epochs": progress.epochs})))
        await self.persist(lambda: self.book.report(job.id, progress))


async def serve(redis: Redis, settings: WorkerSettings, stop: asyncio.Event,
                watch: service.RedisWatch) -> None:
    await Worker(redis, settings, stop, watch).run()


def main() -> None:
    with contextlib.suppress(KeyboardInterrupt):
        service.run("trainer", WorkerSettings, serve)
