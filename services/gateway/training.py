"""Training from the browser: upload MIDI (or pick a music21 corpus), queue a job for the
trainer workers, follow its progress (REST, or the WebSocket ``/ws/train/{job}``), cancel it.
Everything here is the admin's: it needs a token."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from typing import Annotated, Any

from fastapi import (
    APIRouter,
    Depends,
    HTTPException,
    Path,
    Query,
    Request,
    WebSocket,
    WebSocketDisconnect,
)
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile

from gateway import auth
from gateway.api import problems, store
from gateway.listen import refuse
from gateway.store import Store
from gateway.uploads import Collected, Refused, UploadLimits, collect
from playbach.schemas import MODEL_PATTERN
from playbach.service import REDIS_DOWN
from playbach.training import CORPORA, FINAL, PRESETS, JobBook, TrainJob, TrainProgress

router = APIRouter(prefix="/api/train", tags=["training"],
                   responses=problems(401, 422, 503))
ws_router = APIRouter()
JOB_PATTERN = r"^[a-z0-9-]{1,40}$"
JobId = Annotated[str, Path(pattern=JOB_PATTERN, description="a training job's id")]
FORM_SLACK = 1_000_000  # multipart headers and fields around the files
UPLOADS = "/api/train/jobs"  # its body limit is the upload's (app.body_limits)


class Progress(TrainProgress):
    id: str  # the stream entry's id: pass it as ``after`` to get only newer entries


class JobView(BaseModel):
    job: TrainJob
    progress: list[Progress]
    workers: int  # trainer workers alive: 0 means a queued job waits for one


class Options(BaseModel):
    presets: dict[str, str]
    corpora: dict[str, str]
    limits: str
    workers: int


def book(request: Request) -> JobBook:
    return JobBook(request.app.state.redis)


def limits(request: Request) -> UploadLimits:
    s = request.app.state.settings
    return UploadLimits(s.upload_max_files, s.upload_max_mb, s.upload_file_mb)


Admin = Annotated[str, Depends(auth.require_admin)]
Book = Annotated[JobBook, Depends(book)]

UPLOAD_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": MODEL_PATTERN,
                 "description": "the new model's name: a-z 0-9 . _ -, up to 64"},
        "preset": {"type": "string", "enum": list(PRESETS), "default": "default",
                   "description": "; ".join(PRESETS.values())},
        "corpus": {"type": "string", "enum": list(CORPORA),
                   "description": "train on a corpus music21 ships instead of files"},
        "files": {"type": "array", "items": {"type": "string", "format": "binary"},
                  "description": "MIDI files, or zips of them"},
    }}}}}}


@router.get("/options", response_model=Options)
async def options(request: Request, jobs: Book, _: Admin) -> Options:
    """Presets, corpora and upload limits, as the Train page offers them."""
    return Options(presets=PRESETS, corpora=CORPORA, limits=limits(request).describe(),
                   workers=len(await jobs.live_workers()))


async def _form(request: Request, lim: UploadLimits) -> tuple[dict[str, str], list[UploadFile]]:
    """The form (its declared size is within the limit: app.body_limits saw to it)."""
    declared = request.headers.get("content-length")
    if declared is None or not declared.isdigit():
        raise HTTPException(411, "send the upload with a Content-Length header")
    try:
        form = await request.form(max_files=lim.max_files + 1, max_fields=20)
    except Exception as exc:  # Starlette's parser: too many parts, or not multipart at all
        raise HTTPException(422, f"not a form upload this takes ({exc}); send "
                                 f"multipart/form-data with name, preset and files "
                                 f"({lim.describe()})") from None
    fields = {k: v for k, v in form.multi_items() if isinstance(v, str)}
    files = [v for k, v in form.multi_items() if not isinstance(v, str)]
    return fields, files


async def _collect(files: list[UploadFile], lim: UploadLimits) -> Collected:
    parts = [(f.filename or "unnamed", await f.read()) for f in files]  # sized by _form
    try:
        return collect(parts, lim)
    except Refused as exc:
        raise HTTPException(exc.status, exc.detail) from None


@router.post(UPLOADS.removeprefix(router.prefix), status_code=201, response_model=TrainJob,
             openapi_extra=UPLOAD_BODY, responses=problems(400, 409, 411, 413))
async def create_job(request: Request, jobs: Book, db: Annotated[Store, Depends(store)],
                     _: Admin) -> TrainJob:
    """Queue a training job: MIDI files (or zips), or a music21 corpus. Files that are not
    MIDI are skipped and named in ``skipped``; an upload over a limit is refused whole."""
    lim = limits(request)
    fields, files = await _form(request, lim)
    unknown = set(fields) - {"name", "preset", "corpus"}
    if unknown:
        raise HTTPException(422, f"unknown fields {', '.join(sorted(unknown))}; this takes "
                                 "name, preset, corpus and files")
    corpus = fields.get("corpus") or None
    if corpus and files:
        raise HTTPException(422, "send files or choose a corpus, not both")
    if not corpus and not files:
        raise HTTPException(422, f"nothing to train on: send MIDI files (or a zip), or choose "
                                 f"a corpus: {', '.join(CORPORA)}")
    got = await _collect(files, lim) if files else Collected()
    try:
        job = TrainJob(id=secrets.token_hex(6), name=fields.get("name", ""),
                       preset=fields.get("preset") or "default", corpus=corpus,
                       files=sorted(got.files), skipped=got.skipped)
    except ValidationError as exc:
        raise HTTPException(422, "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from None
    await _name_is_free(job.name, db, jobs)
    await jobs.create(job, got.files)
    return job


async def _name_is_free(name: str, db: Store, jobs: JobBook) -> None:
    if name in db.model_names():
        raise HTTPException(409, f"a model named {name!r} exists already; choose another name")
    if any(j.name == name and j.state not in FINAL for j in await jobs.all()):
        raise HTTPException(409, f"a job is training {name!r} already; choose another name")


@router.get("/jobs", response_model=list[TrainJob])
async def list_jobs(jobs: Book, _: Admin) -> list[TrainJob]:
    """The newest jobs first (the last 50)."""
    return await jobs.all()


async def _job(jobs: JobBook, jid: str) -> TrainJob:
    job = await jobs.get(jid)
    if job is None:
        raise HTTPException(404, f"no training job {jid!r}")
    return job


@router.get("/jobs/{jid}", response_model=JobView, responses=problems(404))
async def get_job(jid: JobId, jobs: Book, _: Admin,
                  after: Annotated[str, Query(pattern=r"^\d+-\d+$",
                                              description="only progress after this entry id")]
                  = "0-0") -> JobView:
    """The job and its progress (every entry, or those after ``after``)."""
    job = await _job(jobs, jid)
    entries = await jobs.progress(jid, after)
    return JobView(job=job, progress=[Progress(id=i, **p.model_dump()) for i, p in entries],
                   workers=len(await jobs.live_workers()))


@router.post("/jobs/{jid}/cancel", response_model=TrainJob, responses=problems(404))
async def cancel_job(jid: JobId, jobs: Book, _: Admin) -> TrainJob:
    """Stop a job: a queued one at once, a running one after its current batch."""
    await _job(jobs, jid)
    return await jobs.cancel(jid)


@ws_router.websocket("/ws/train/{jid}")
async def follow(ws: WebSocket, jid: str, token: str | None = Query(None)) -> None:
    """A job's progress as JSON text messages: ``{"type": "job", ...}`` first, then each
    progress entry (``{"type": "progress", "id": ..., "kind": ...}``) as it comes; closed
    after the job ends. Needs an admin token (``?token=``)."""
    if auth.token_user(ws, token) is None:
        await refuse(ws, "log in first: training progress needs an admin token")
        return
    jobs = JobBook(ws.app.state.redis)
    try:
        job = await jobs.get(jid) if len(jid) <= 40 else None
    except REDIS_DOWN:
        await refuse(ws, "the server is restarting; try again", 1013)
        return
    if job is None:
        await refuse(ws, f"no training job {jid!r}")
        return
    await ws.accept()
    closed = asyncio.create_task(_closed(ws))
    try:
        await ws.send_text(json.dumps({"type": "job", **job.model_dump(mode="json")}))
        after = "0-0"
        while not closed.done():
            for eid, entry in await jobs.progress(jid, after, block_ms=1000):
                after = eid
                await ws.send_text(json.dumps({"type": "progress", "id": eid,
                                               **entry.model_dump(mode="json")}))
                if entry.kind == "state" and entry.state in FINAL:
                    await ws.close()
                    return
    except (WebSocketDisconnect, RuntimeError, *REDIS_DOWN):
        pass
    finally:
        closed.cancel()


async def _closed(ws: WebSocket) -> Any:
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        while (await ws.receive())["type"] != "websocket.disconnect":
            pass

