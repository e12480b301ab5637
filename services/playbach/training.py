"""Training jobs: what the gateway queues and the trainer worker (``python -m trainer worker``)
runs, and the progress it reports. Keys are in :mod:`playbach.streams`.

A job is one JSON document in ``pb:train:job:{<id>}``, changed only by a WATCH/MULTI
read-modify-write (:meth:`JobBook.change`), so a cancel and a claim cannot both win. Its
uploaded files wait in ``pb:train:files:{<id>}`` (same slot) until it ends; its progress is a
stream a browser can follow from any entry on.

A worker beats in ``pb:replicas:trainer`` while it lives. A running job whose worker has not
beaten for WORKER_LEASE_MS was lost with its worker (killed, restarted): any worker marks it
failed, saying so, rather than leave it "running" for ever."""

from __future__ import annotations

import time
from typing import Annotated, Literal

from pydantic import BaseModel, Field
from redis.exceptions import WatchError

from playbach import streams
from playbach.schemas import ModelName

# The trainer's presets (trainer/config.py checks it has exactly these), as users choose them.
PRESETS = {
    "tiny": "tiny: about a minute; a small network, for trying things out",
    "default": "default: the shipped models' network; 5-20 minutes on 2 cores",
}
# Corpora music21 ships (no download), by the name jobs use (trainer/corpus.py finds them).
CORPORA = {
    "bach-chorales": "Bach: the chorales (music21, 371 four-part chorales)",
    "monteverdi": "Monteverdi: madrigals (music21, 49)",
    "beethoven": "Beethoven: string quartet movements (music21, 26)",
    "mozart": "Mozart: string quartet movements (music21, 16)",
    "palestrina": "Palestrina: mass movements (music21, 1,318; slow to parse)",
}
MAX_FILE_MB = 2.0  # one MIDI file; the gateway refuses larger uploads, the trainer skips them
MIDI_MAGIC = b"MThd"  # every Standard MIDI File begins so
JOBS_KEPT = 50  # the newest jobs listed; older ones (and their progress) are removed
FILES_TTL_S = 7 * 86400  # uploads of a job no worker ever took are not kept for ever
WORKER_LEASE_MS = 15_000  # a worker silent this long is gone, and so is its running job

JobState = Literal["queued", "running", "done", "failed", "cancelled"]
FINAL: tuple[JobState, ...] = ("done", "failed", "cancelled")
Preset = Annotated[Literal["tiny", "default"], Field(description="; ".join(PRESETS.values()))]
CorpusName = Annotated[Literal["bach-chorales", "monteverdi", "beethoven", "mozart",
                               "palestrina"],
                       Field(description="a corpus music21 ships: " + "; ".join(CORPORA.values()))]
assert set(Preset.__origin__.__args__) == set(PRESETS)  # spelled twice only for the types
assert set(CorpusName.__origin__.__args__) == set(CORPORA)


class Skipped(BaseModel):
    file: str
    reason: str


class TrainJob(BaseModel):
    id: str = Field(pattern=r"^[a-z0-9-]{1,40}$")
    name: ModelName
    preset: Preset = "default"
    corpus: CorpusName | None = None  # None: the uploaded files
    files: list[str] = []  # the uploaded MIDI files it trains on
    skipped: list[Skipped] = []  # at upload (gateway), then at parsing (trainer): named, why
    state: JobState = "queued"
    reason: str | None = None  # why it failed or was cancelled
    created: float = Field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    worker: str | None = None
    cancel: bool = False  # asked to stop; the worker stops it at the next batch
    epoch: int = 0  # epochs done
    epochs: int = 0  # at most (early stopping may end sooner)
    model: str | None = None  # the published model's name, when done

    @property
    def source(self) -> str:
        return CORPORA[self.corpus] if self.corpus else f"{len(self.files)} uploaded files"


class TrainProgress(BaseModel):
    """One entry of a job's progress stream."""

    kind: Literal["state", "parse", "epoch", "phase"]
    state: JobState | None = None  # kind "state": the job's new state (and ``message``: why)
    message: str = ""
    done: int | None = None  # kind "parse": files parsed of ``total``
    total: int | None = None
    epoch: int | None = None  # kind "epoch": the epoch just finished (1-based) of ``epochs``
    epochs: int | None = None
    loss: float | None = None
    val_loss: float | None = None
    accuracy: float | None = None  # pitch accuracy, training windows
    val_accuracy: float | None = None  # pitch accuracy on the held-out validation pieces
    seconds: float | None = None  # since the job started
    eta_s: float | None = None  # at most this long still, if no early stop
    time: float = Field(default_factory=time.time)


class JobBook:
    """The jobs in Redis, for the gateway and the workers (an asyncio Redis or cluster)."""

    def __init__(self, redis) -> None:
        self.redis = redis

    async def create(self, job: TrainJob, files: dict[str, bytes]) -> None:
        if files:  # first: a job that can be seen has its files
            await self.redis.hset(streams.train_files(job.id), mapping=files)
            await self.redis.expire(streams.train_files(job.id), FILES_TTL_S)
        await self.redis.hset(streams.train_job(job.id), "json", job.model_dump_json())
        await self.redis.zadd(streams.TRAIN_JOBS, {job.id: job.created})
        await self.report(job.id, TrainProgress(kind="state", state="queued",
                                                message=f"queued: {job.source}"))
        await self._trim()

    async def _trim(self) -> None:
        old = await self.redis.zrange(streams.TRAIN_JOBS, 0, -JOBS_KEPT - 1)
        for raw in old:
            jid = streams.text(raw)
            job = await self.get(jid)
            if job is None or job.state in FINAL:  # a live job is never dropped
                await self.redis.delete(streams.train_job(jid), streams.train_files(jid),
                                        streams.train_progress(jid))
                await self.redis.zrem(streams.TRAIN_JOBS, jid)

    async def get(self, jid: str) -> TrainJob | None:
        raw = await self.redis.hget(streams.train_job(jid), "json")
        return TrainJob.model_validate_json(raw) if raw else None

    async def ids(self) -> list[str]:
        """Newest first."""
        return [streams.text(j) for j in await self.redis.zrevrange(streams.TRAIN_JOBS, 0, -1)]

    async def all(self) -> list[TrainJob]:
        return [job for jid in await self.ids() if (job := await self.get(jid))]

    async def change(self, jid: str, edit) -> TrainJob | None:
        """Apply ``edit(job) -> job or None`` atomically; None (from either): nothing changed."""
        key = streams.train_job(jid)
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    raw = await pipe.hget(key, "json")
                    new = edit(TrainJob.model_validate_json(raw)) if raw else None
                    if new is None:
                        await pipe.unwatch()
                        return None
                    pipe.multi()
                    pipe.hset(key, "json", new.model_dump_json())
                    await pipe.execute()
                    return new
                except WatchError:
                    continue

    async def finish(self, jid: str, state: JobState, reason: str | None = None,
                     **fields) -> TrainJob | None:
        """End a job that has not ended, drop its files, and say so on its stream."""

        def end(job: TrainJob) -> TrainJob | None:
            if job.state in FINAL:
                return None
            return job.model_copy(update={"state": state, "reason": reason,
                                          "finished": time.time(), **fields})

        job = await self.change(jid, end)
        if job is not None:
            await self.redis.delete(streams.train_files(jid))
            said = f"published as model {job.model}" if job.model else state
            await self.report(jid, TrainProgress(kind="state", state=state,
                                                 message=reason or said))
        return job

    async def cancel(self, jid: str) -> TrainJob | None:
        """A queued job ends now; a running one is asked to stop (its worker ends it)."""
        job = await self.get(jid)
        if job is None or job.state in FINAL:
            return job
        if job.state == "queued":
            ended = await self.finish(jid, "cancelled", "cancelled before it started")
            if ended is not None:
                return ended
        return await self.change(jid, lambda j: None if j.state in FINAL
                                 else j.model_copy(update={"cancel": True})) or await self.get(jid)

    async def claim(self, worker: str) -> TrainJob | None:
        """The oldest queued job, now running on ``worker``; None if there is none."""
        for jid in reversed(await self.ids()):

            def take(job: TrainJob) -> TrainJob | None:
                if job.state != "queued" or job.cancel:
                    return None
                return job.model_copy(update={"state": "running", "worker": worker,
                                              "started": time.time()})

            job = await self.change(jid, take)
            if job is not None:
                await self.report(jid, TrainProgress(kind="state", state="running",
                                                     message=f"started on worker {worker}"))
                return job
        return None

    async def report(self, jid: str, progress: TrainProgress) -> None:
        await self.redis.xadd(streams.train_progress(jid), {"json": progress.model_dump_json()},
                              maxlen=5000, approximate=True)

    async def progress(self, jid: str, after: str = "0-0", block_ms: int | None = None
                       ) -> list[tuple[str, TrainProgress]]:
        """Entries after ``after`` (an entry id), waiting up to ``block_ms`` for one."""
        key = streams.train_progress(jid)
        if block_ms is None:
            entries = await self.redis.xrange(key, min=f"({after}" if after != "0-0" else "-")
        else:
            found = await self.redis.xread({key: after}, count=500, block=block_ms)
            entries = found[0][1] if found else []
        return [(streams.text(eid), TrainProgress.model_validate_json(streams.text(f[b"json"])))
                for eid, f in entries]

    async def files(self, jid: str) -> dict[str, bytes]:
        return {streams.text(k): v for k, v in
                (await self.redis.hgetall(streams.train_files(jid))).items()}

    async def beat(self, worker: str) -> None:
        now = time.time() * 1000
        pipe = self.redis.pipeline(transaction=False)
        pipe.zadd(streams.replicas(streams.TRAINER), {worker: now})
        pipe.zremrangebyscore(streams.replicas(streams.TRAINER), 0, now - 10 * WORKER_LEASE_MS)
        await pipe.execute()

    async def live_workers(self) -> list[str]:
        now = time.time() * 1000
        found = await self.redis.zrangebyscore(streams.replicas(streams.TRAINER),
                                               now - WORKER_LEASE_MS, "+inf")
        return [streams.text(w) for w in found]

    async def reap(self, restarted: str | None = None) -> list[TrainJob]:
        """Fail every running job whose worker is gone, or is ``restarted`` (this worker,
        starting again under the same id: what it ran is lost)."""
        failed, alive = [], set(await self.live_workers())
        for job in await self.all():
            if job.state != "running" or not job.worker:
                continue
            mine = job.worker == restarted
            if mine or job.worker not in alive:
                where = f" at epoch {job.epoch} of {job.epochs}" if job.epochs else ""
                how = "restarted" if mine else "stopped answering (killed, or its machine lost)"
                ended = await self.finish(job.id, "failed",
                                          f"the trainer worker {job.worker} {how} while "
                                          f"training it{where}; start it again")
                if ended:
                    failed.append(ended)
        return failed


def is_midi(data: bytes) -> bool:
    return data[:4] == MIDI_MAGIC


__all__ = ["CORPORA", "FINAL", "MAX_FILE_MB", "PRESETS", "JobBook", "Skipped", "TrainJob",
           "TrainProgress", "is_midi"]
