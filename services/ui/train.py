"""The Train page: upload MIDI (or pick a music21 corpus), follow the job, see how the new
model does on pieces it never saw against the n-gram, and play it."""

from __future__ import annotations

import time
from typing import Any

import pandas as pd
import streamlit as st

from ui.client import Gateway, GatewayError

FINAL = ("done", "failed", "cancelled")
STATE_ICON = {"queued": ":material/hourglass_empty:", "running": ":material/directions_run:",
              "done": ":material/check_circle:", "failed": ":material/error:",
              "cancelled": ":material/stop_circle:"}
HEADS = ("pitch", "duration", "velocity")


def page(gw: Gateway, flash, channel: str) -> None:
    try:
        options = gw.train_options()
        jobs = gw.train_jobs()
    except GatewayError as exc:
        st.error(str(exc))
        return
    if not options["workers"]:
        st.warning("No trainer worker is running: a job waits in the queue until one starts "
                   "(`make up` starts one; Compose: the `trainer-worker` service).")
    with st.expander("New model", expanded=not jobs):
        new_job(gw, flash, options)
    if not jobs:
        return
    ids = [j["id"] for j in jobs]
    by_id = {j["id"]: j for j in jobs}
    state = st.session_state
    if state.get("train-job") not in ids:
        state["train-job"] = ids[0]
    # the state is shown below the picker, which keeps the labels it was first drawn with
    st.selectbox("Job", ids, key="train-job", format_func=lambda j: (
        f"{by_id[j]['name']} · {by_id[j]['preset']} · "
        f"{time.strftime('%d %b %H:%M', time.localtime(by_id[j]['created']))}"))
    jid = state["train-job"]
    if by_id[jid]["state"] in FINAL:
        job_view(gw, flash, jid, channel)
    else:
        st.fragment(run_every=1.0)(job_view)(gw, flash, jid, channel)


def new_job(gw: Gateway, flash, options: dict[str, Any]) -> None:
    source = st.radio("Music", ["Upload MIDI files", "A corpus music21 ships"], horizontal=True,
                      key="train-source")
    with st.form("train", clear_on_submit=False, border=False):
        name = st.text_input("Model name", key="train-name", max_chars=64,
                             placeholder="e.g. my-bach", help="a-z, 0-9, . _ - (lower case)")
        if source == "Upload MIDI files":
            files = st.file_uploader("MIDI files, or a zip of them", type=["mid", "midi", "zip"],
                                     accept_multiple_files=True, key="train-files",
                                     help=f"Limits: {options['limits']}. Files that are not "
                                          "MIDI are skipped and named.")
            corpus = None
        else:
            files = []
            corpus = st.selectbox("Corpus", list(options["corpora"]), key="train-corpus",
                                  format_func=options["corpora"].get)
        preset = st.selectbox("Preset", list(options["presets"]), key="train-preset",
                              format_func=options["presets"].get)
        submitted = st.form_submit_button("Start training", type="primary", width="stretch")
    if not submitted:
        return
    if not name.strip():
        st.error("Give the model a name first.")
        return
    if corpus is None and not files:
        st.error("Choose MIDI files (or a zip) first.")
        return
    try:
        job = gw.train(name.strip(), preset, corpus, [(f.name, f.getvalue()) for f in files])
    except GatewayError as exc:
        st.error(str(exc))
        return
    st.session_state["train-job"] = job["id"]
    skipped = "".join(f"\n- {s['file']}: {s['reason']}" for s in job["skipped"])
    flash("success", f"Training {job['name']} is queued" + (
        f" ({len(job['files'])} files). Skipped:{skipped}" if skipped else "."))
    st.rerun()


def job_view(gw: Gateway, flash, jid: str, channel: str) -> None:
    try:
        view = gw.train_job(jid)
    except GatewayError as exc:
        st.error(str(exc))
        return
    job, progress = view["job"], view["progress"]
    st.markdown(f"**{STATE_ICON[job['state']]} {job['name']}** · {job['preset']} preset · "
                f"{job['corpus'] or str(len(job['files'])) + ' uploaded files'}")
    bar(job, progress, view["workers"])
    epochs = [p for p in progress if p["kind"] == "epoch"]
    if epochs:
        curves(epochs)
    notes = [p["message"] for p in progress if p["kind"] in ("phase", "state") and p["message"]]
    if job["skipped"]:
        st.caption("Skipped: " + "; ".join(f"{s['file']} ({s['reason']})"
                                           for s in job["skipped"]))
    with st.expander("Log", expanded=job["state"] == "failed"):
        st.text("\n".join(notes[-30:]))
    if job["state"] == "failed":
        st.error(f"Failed: {job['reason']}")
    if job["state"] not in FINAL:
        if st.button("Cancel training", key=f"cancel-{jid}"):
            try:
                gw.cancel_job(jid)
            except GatewayError as exc:
                flash("error", str(exc))
        return
    if st.session_state.get("train-seen") != (jid, job["state"]):
        st.session_state["train-seen"] = (jid, job["state"])
        st.rerun(scope="app")  # it ended: stop refreshing, and let every model list see it
    if job["state"] == "done" and job.get("model"):
        result(gw, flash, job["model"], channel)


def bar(job: dict, progress: list[dict], workers: int) -> None:
    if job["state"] == "queued":
        st.progress(0.0, text="waiting for a trainer worker" + (
            "" if workers else " (none is running)"))
        return
    last = progress[-1] if progress else {}
    epoch = next((p for p in reversed(progress) if p["kind"] == "epoch"), None)
    if job["state"] in FINAL:
        st.progress(1.0, text=job["state"])
    elif last.get("kind") == "parse" and last.get("total"):
        st.progress(last["done"] / last["total"],
                    text=f"parsing files: {last['done']} of {last['total']}")
    elif epoch:
        left = epoch.get("eta_s")
        text = f"epoch {epoch['epoch']} of at most {epoch['epochs']}"
        if last.get("kind") == "phase":  # what runs now first, then how far training came
            text = f"{last['message']} · after epoch {epoch['epoch']} of at most " \
                   f"{epoch['epochs']}"
        elif left:
            text += f" · at most {left:.0f} s left (it stops early when it stops improving)"
        st.progress(epoch["epoch"] / epoch["epochs"], text=text)
    else:
        st.progress(0.0, text=last.get("message") or "starting")


def curves(epochs: list[dict]) -> None:
    frame = pd.DataFrame(epochs).drop_duplicates("epoch", keep="last").set_index("epoch")
    left, right = st.columns(2)
    left.markdown("**Loss** (lower is better)")
    left.line_chart(frame[["loss", "val_loss"]].rename(
        columns={"loss": "training", "val_loss": "held-out"}), height=200,
        x_label="epoch")
    right.markdown("**Pitch accuracy**")
    right.line_chart(frame[["accuracy", "val_accuracy"]].rename(
        columns={"accuracy": "training", "val_accuracy": "held-out"}), height=200,
        x_label="epoch")


def result(gw: Gateway, flash, model: str, channel: str) -> None:
    try:
        meta = gw.model(model)
    except GatewayError as exc:
        st.error(str(exc))
        return
    m = meta.get("metrics", {})
    rows = []
    for head in HEADS:
        row = {"head": head}
        for who, label in (("network", "network"), ("ngram", "n-gram"), ("unigram", "unigram"),
                           ("repeat", "repeat")):
            cell = m.get(who, {}).get("test", {}).get(head)
            if cell:
                row[label] = f"{cell['accuracy']:.1%} · {cell['nats']:.2f}"
        rows.append(row)
    pieces = meta.get("corpus", {}).get("split", {}).get("test", 0)
    st.markdown(f"**How {model} does on {pieces} held-out piece{'s' * (pieces != 1)} it "
                f"never saw**")
    st.dataframe(pd.DataFrame(rows).set_index("head"), width="stretch")
    st.caption("Each cell: accuracy (higher is better) · nats per event (lower is better). "
               "n-gram: the best order chosen on validation pieces; repeat: the previous "
               "event again.")

    if pieces < 3:
        st.warning(f"{pieces} held-out piece{'s' * (pieces != 1)} decide{'s' * (pieces == 1)} "
                   "little: another split could read quite differently. Train on more files "
                   "(the held-out share is a tenth of the pieces) for figures to trust.")

    def play(where: str) -> None:
        try:
            if where == "new":
                made = gw.create_channel(model=model, name=f"{model}, just trained")
                st.session_state["channel"] = made["id"]
                flash("success", f"A new channel plays {model}: “{made['params']['name']}”")
                return
            gw.update(channel, model=model)
        except GatewayError as exc:
            flash("error", str(exc))
            return
        flash("success", f"{channel} now plays {model}")

    mine, shared = st.columns(2)
    mine.button(f"▶ Play {model} on a new channel", key=f"play-model-new-{model}",
                on_click=play, args=("new",), type="primary", width="stretch")
    if channel == "radio":  # what every listener hears: only when meant
        meant = shared.checkbox("Change the shared radio for every listener",
                                key=f"play-radio-{model}")
        shared.button(f"Play {model} on the shared radio", key=f"play-model-{model}",
                      on_click=play, args=("here",), disabled=not meant, width="stretch")
    else:
        shared.button(f"▶ Play {model} on this channel", key=f"play-model-{model}",
                      on_click=play, args=("here",), width="stretch")
