"""Play Bach's control room. Run: ``streamlit run services/ui/app.py`` (``make up`` does).

Everything goes through the gateway's REST API; the embedded player connects from the
visitor's browser to the gateway's public URL."""

from __future__ import annotations

import time
from urllib.parse import quote

import altair as alt
import pandas as pd
import streamlit as st
from pydantic import ValidationError

from playbach.schemas import BPM, DEFAULT_TOP_P, TEMPERATURE, TOP_P
from playbach.settings import describe
from ui import train
from ui.client import Gateway, GatewayError
from ui.settings import UiSettings

st.set_page_config(page_title="Play Bach — control room", page_icon=":material/music_note:",
                   layout="wide")
HISTORY = 300  # stats points kept for the charts
PLAYER_HEIGHT = 560  # the embedded player, meters and downloads included, at 390 px wide too


def load_settings() -> UiSettings | str:  # cheap; not cached, so the environment is respected
    try:
        return UiSettings()
    except ValidationError as exc:
        return f"bad setting: {describe(exc)}"


settings = load_settings()
if isinstance(settings, str):
    st.error(settings)
    st.stop()
state = st.session_state
if "gateway" not in state:
    state.gateway = Gateway(settings.gateway_url, settings.request_timeout)
gw: Gateway = state.gateway
state.setdefault("flash", [])
state.setdefault("history", [])


def flash(kind: str, text: str, beside: str | None = None) -> None:
    """A message shown once, after the rerun a callback causes: as a toast, which shows
    wherever the user is on the page, or ``beside`` the button it answers (its key)."""
    if beside:
        state[f"said-{beside}"] = (kind, text)
    else:
        state.flash.append((kind, text))


def said(where, key: str) -> None:
    """What the button ``key`` answered, under it (once)."""
    kind, text = state.pop(f"said-{key}", (None, None))
    if text:
        (where.error if kind == "error" else where.success)(text)


def attempt(action, success: str | None = None, beside: str | None = None):
    try:
        result = action()
    except GatewayError as exc:
        flash("error", str(exc), beside)
        return None
    if success:
        flash("success", success, beside)
    return result


# --- the account, on the page (a phone folds the sidebar away); the server test aside -----

# Streamlit's Material icons, not emoji: a system without an emoji font shows emoji as boxes
st.markdown("### :material/music_note: Play Bach")
account = st.container()
if gw.admin:
    who, out = account.columns([4, 1], vertical_alignment="center")
    who.success("logged in: you can change the music and train models")
    if out.button("Log out", key="logout", width="stretch"):
        gw.logout()
        st.rerun()
else:
    with account.expander("Log in to change the music (anyone can listen)", icon=":material/key:"):
        with st.form("login", border=False):
            user = st.text_input("User", key="username", value="admin")
            password = st.text_input("Password", key="password", type="password")
            submitted = st.form_submit_button("Log in", key="login-submit", width="stretch")
        if submitted and attempt(lambda: gw.login(user, password)):  # the page says so
            st.rerun()

with st.sidebar:
    st.caption("A neural network improvises Bach, live.")

    def server_test() -> None:
        pong = attempt(gw.ping, beside="ping")
        if pong:
            flash("success", f"Server test: {pong['round_trip_ms']:.0f} ms round trip "
                             f"(Redis {pong['redis_ms']:.1f} ms)", beside="ping")

    st.button("Server test", key="ping", on_click=server_test, icon=":material/dns:",
              help="a round trip through the gateway and Redis")
    said(st, "ping")
    st.caption(f"Gateway: {settings.public_gateway_url} · [API docs]"
               f"({settings.public_gateway_url}/docs)")

# Toasts take no place in the page: the embedded player is never re-created (and never goes
# silent) because a message appeared or disappeared above it.
for kind, text in state.flash:
    st.toast(text, icon=":material/error:" if kind == "error" else ":material/check_circle:",
             duration="long" if kind == "error" or len(text) > 60 else "short")
state.flash = []

try:
    channels = gw.channels()
    models = gw.models()
    instruments = gw.instruments()
except GatewayError as exc:
    st.error(f"{exc}. Is it running? (`make up` starts it.)")
    st.stop()

instrument_names = {i["program"]: i["name"] for i in instruments}
FIELD_NAMES = {"model": "Model", "instrument": "Instrument", "bpm": "BPM",
               "temperature": "Temperature", "top_p": "Top-p", "seed": "Seed"}


def describe_params(p: dict) -> str:
    """A channel's settings as a listener says them: names, not numbers."""
    said = [f"model {p['model']}", instrument_names.get(p["instrument"], str(p["instrument"])),
            f"{p['bpm']:g} BPM", f"temperature {p['temperature']:g}",
            f"top-p {p.get('top_p', DEFAULT_TOP_P):g}"]
    return ", ".join(said + ([f"seed {p['seed']}"] if p.get("seed") is not None else []))


listen, train_tab, stats_tab, guide = st.tabs([
    ":material/headphones: Listen", ":material/model_training: Train",
    ":material/monitoring: Stats", ":material/menu_book: Guide & about"])

# --- listen ------------------------------------------------------------------------------

with listen:
    ids = [c["id"] for c in channels]
    if not ids:
        st.warning("No channels yet: log in and create one.")
        st.stop()
    state.setdefault("channel", "radio" if "radio" in ids else ids[0])
    if state.channel not in ids:
        state.channel = ids[0]
    # A desktop shows the controls beside the player; a phone stacks the two columns, so the
    # order there stays picker, player, controls.
    player_col, controls_col = st.columns([11, 9], gap="medium")
    pick, new = player_col.columns([5, 4], vertical_alignment="bottom")
    names = {c["id"]: c["params"].get("name") or c["id"] for c in channels}

    def channel_label(c: str) -> str:  # its name; the id only tells the shared one
        return f"{names[c]} (shared radio)" if c == "radio" else names[c]

    cid = pick.selectbox("Channel", ids, key="channel", format_func=channel_label)

    def create_mine() -> None:
        source = gw.channel(state.channel)["params"]
        copied = {k: v for k, v in source.items() if k != "name"}
        made = attempt(lambda: (gw.as_guest(), gw.create_channel(**copied))[1])
        if made:
            state.channel = made["id"]
            flash("success", f"A new channel just for you, “{made['params']['name']}”. It "
                             f"starts with the settings of {channel_label(cid)}: "
                             f"{describe_params(source)}.")

    new.button("New channel just for me", key="new-channel", on_click=create_mine,
               help="private: listed only to you (and the admin); whoever has its link "
                    "can listen", width="stretch")
    chosen_channel = next(c for c in channels if c["id"] == cid)
    params = chosen_channel["params"]
    readonly = not chosen_channel.get("yours")
    # The player itself, always: its ▶ Play is the one press that starts sound (a browser
    # starts audio only on a click inside the frame that plays it), and the picker above is
    # the one channel selection (the embedded player hides its own). For
    # PUBLIC_LISTENING=false it gets a listen-only token, never the admin's (that would sit
    # in the frame's address, where anyone who sees it could change the channel).
    token = f"&token={quote(gw.listen_token)}" if gw.listen_token else ""
    player_col.iframe(f"{settings.public_gateway_url}/?channel={quote(cid)}&embed=1{token}",
                      height=PLAYER_HEIGHT)
    notice = controls_col.container()
    if readonly:
        notice.info("Log in (at the top) to change the music, or make a channel just for "
                    "you. Anyone can listen.")

    def change(field: str, key: str, convert=lambda v: v) -> None:
        value = convert(state[key])
        shown = instrument_names.get(value, value) if field == "instrument" else value
        attempt(lambda: gw.update(cid, **{field: value}),
                f"{FIELD_NAMES.get(field, field)} is now {shown} on {channel_label(cid)}")

    model_names = [m["name"] for m in models]
    by_name = {m["name"]: m for m in models}

    def model_label(name: str) -> str:  # short: a phone shows about 40 characters
        acc = (by_name[name].get("test_accuracy") or {}).get("pitch")
        return name if acc is None else f"{name} · pitch {acc:.0%}"

    # Rows of two, so that a phone, which stacks columns, keeps the controls in this order.
    c1, c2 = controls_col.columns(2)
    c1.selectbox("Model", model_names, key=f"model-{cid}", format_func=model_label,
                 index=model_names.index(params["model"]) if params["model"] in model_names
                 else 0, on_change=change, args=("model", f"model-{cid}"), disabled=readonly)
    chosen = by_name.get(state.get(f"model-{cid}") or params["model"], {})
    ngram = (chosen.get("ngram_accuracy") or {}).get("pitch")
    c1.caption(f"Trained on {chosen.get('corpus') or '?'}" + (
        f"; the n-gram baseline: pitch {ngram:.0%} on the same unseen pieces"
        if ngram is not None else ""))
    programs = [f"{i['program']}: {i['name']}" for i in instruments]
    c2.selectbox("Instrument", programs, index=params["instrument"], key=f"instrument-{cid}",
                 on_change=change,
                 args=("instrument", f"instrument-{cid}", lambda v: int(v.split(":")[0])),
                 disabled=readonly)
    c1, c2 = controls_col.columns(2)
    c1.slider("BPM", *BPM, int(params["bpm"]), key=f"bpm-{cid}", on_change=change,
              args=("bpm", f"bpm-{cid}"), disabled=readonly)
    c2.slider("Temperature", *TEMPERATURE, float(params["temperature"]), step=0.05,
              key=f"temperature-{cid}", on_change=change, args=("temperature",
                                                                 f"temperature-{cid}"),
              help="low: safe, repetitive choices; 1: as learned; high: adventurous",
              disabled=readonly)
    c1, c2 = controls_col.columns(2)
    c1.slider("Top-p", *TOP_P, float(params.get("top_p", DEFAULT_TOP_P)), step=0.05,
              key=f"top_p-{cid}", on_change=change, args=("top_p", f"top_p-{cid}"),
              help="draw only from the likeliest choices that together make up this share: "
                   f"lower cuts the unlikely tail; 1: every choice may come ({DEFAULT_TOP_P}: "
                   "keeps the music in key)", disabled=readonly)
    seed_col, apply_col = c2.columns([3, 2], vertical_alignment="bottom")
    seed_col.text_input("Seed (optional)", value="" if params["seed"] is None
                        else str(params["seed"]), key=f"seed-{cid}",
                        placeholder="empty: a new surprise every time", disabled=readonly)

    def apply_seed() -> None:
        text = state[f"seed-{cid}"].strip()
        if not text:
            flash("error", "type a whole number from 0 to 4294967295 as the seed")
            return
        try:
            value = int(text)
        except ValueError:
            flash("error", f"seed: {text!r} is not a whole number (0 to 4294967295)")
            return
        attempt(lambda: gw.update(cid, seed=value), "seed set: the same seed, the same music")

    apply_col.button("Apply", key=f"apply-seed-{cid}", on_click=apply_seed, disabled=readonly,
                     width="stretch")
    controls_col.button("Audio test", key="tone", disabled=readonly, icon=":material/graphic_eq:",
                        on_click=lambda: attempt(lambda: gw.tone(cid), "Audio test: a 440 Hz "
                                                 "tone plays in the player for one second",
                                                 beside="tone"),
                        help="a 440 Hz tone through the same audio path as the music "
                             "(everyone on the channel hears it)")
    said(controls_col, "tone")

# --- train -------------------------------------------------------------------------------

with train_tab:
    if gw.admin:
        train.page(gw, flash, state.channel)
    else:
        st.info("Log in (at the top) to train a model on your own MIDI files.")

# --- stats -------------------------------------------------------------------------------


@st.fragment(run_every=settings.stats_every)
def stats_panel() -> None:
    try:
        now = gw.stats()
    except GatewayError as exc:
        st.error(str(exc))
        return
    for ch, values in now["channels"].items():
        state.history.append({"time": pd.Timestamp(now["time"], unit="s"), "channel": ch,
                              **{k: v for k, v in values.items()
                                 if isinstance(v, int | float)}})
    state.history = state.history[-HISTORY * max(len(now["channels"]), 1):]
    frame = pd.DataFrame(state.history)
    if frame.empty:
        st.info("No channels yet.")
        return
    st.caption(f"Refreshes every {settings.stats_every:g} s · updated "
               f"{time.strftime('%H:%M:%S')}")
    charts = [("listeners", "Listeners", True), ("notes_per_s", "Notes per second", False),
              ("lead_ms", "Synth lead (ms)", False),
              ("underruns", "Underruns reported by players", True)]
    cols = st.columns(2)
    for i, (metric, title, counted) in enumerate(charts):
        with cols[i % 2]:
            st.markdown(f"**{title}**")
            metric_chart(frame, metric, counted)
    st.dataframe(pd.DataFrame(now["channels"]).T, width="stretch")


def metric_chart(frame: pd.DataFrame, metric: str, counted: bool) -> None:
    """One metric per channel over time. Whole numbers on the axis of what is counted (no
    0.5 listeners); a metric no channel reports yet is said, not drawn as an empty chart
    (Vega-Lite logs "Infinite extent" for a scale with no values)."""
    data = frame[["time", "channel", metric]].dropna() if metric in frame else frame.iloc[:0]
    if data.empty:
        st.caption("nothing reported yet")
        return
    axis = alt.Axis(format="d", tickMinStep=1) if counted else alt.Axis()
    chart = alt.Chart(data).mark_line(point=len(data) < 3).encode(
        # 24-hour clock: Vega-Lite's default reads 20:06 as "08:06"
        x=alt.X("time:T", title=None, axis=alt.Axis(format="%H:%M:%S")),
        y=alt.Y(f"{metric}:Q", title=None, axis=axis, scale=alt.Scale(zero=True)),
        color=alt.Color("channel:N", legend=alt.Legend(orient="bottom", title=None)))
    st.altair_chart(chart.properties(height=180), width="stretch")


with stats_tab:
    stats_panel()

# --- guide -------------------------------------------------------------------------------

with guide:
    st.markdown(f"""
### How to use it
1. **Listen**: press **▶ Play** in the player. The piano roll shows the notes as they sound;
   the line is *now*, notes to its right are about to play. The player's **? Help** explains
   its meters; its links download the last two minutes as MIDI or WAV.
2. **Change the music** (log in first): model, instrument, BPM and temperature act while it
   plays — a new instrument or tempo within about half a second, a new temperature or model
   within about a second and a half.
3. **Your own channel**: *New channel just for me* starts one that only you change. The shared
   *radio* is what everyone hears.
4. **Server test** checks the gateway and Redis; **Audio test** plays a 440 Hz tone through the
   same path as the music.
5. **Train** (log in first): upload MIDI files or pick a corpus, follow the training, compare
   the new model with the n-gram on pieces it never saw, and play it.

### What temperature does
The network gives every possible next chord a probability. The temperature reshapes them before
one is drawn: **below 1** the likely choices win more often (calm, sometimes repetitive);
**1** plays as it learned; **above 1** unlikely choices get a chance (adventurous, sometimes
wrong). **Top-p** cuts the tail instead: only the likeliest choices that together make up
that share may be drawn (0.9: the unlikeliest tenth never plays), at any temperature. A
**seed** makes a channel's choices repeatable.

### About
An LSTM trained on Bach's cello suites (the radio's default) and on the chorales that ship
with music21 improvises note by note; a single-step TFLite model makes each note in a fraction of a
millisecond, FluidSynth with the FluidR3 General MIDI SoundFont plays it, and the gateway
streams it to every listener. It grew from an LSTM on Bach's cello suites with a Flask WAV
stream. Links: [the player]({settings.public_gateway_url}/) ·
[WAV stream for VLC]({settings.public_gateway_url}/stream/radio.wav) ·
[API documentation]({settings.public_gateway_url}/docs).
""")
