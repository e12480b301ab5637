// Play Bach's web player: WebSocket in, AudioWorklet out, a live piano roll in between.
'use strict';
const q = new URLSearchParams(location.search);
const state = window.playbach = {           // read by the browser tests
  channel: q.get('channel') || 'radio', rate: 44100, params: null, instruments: [],
  notes: [], noteCount: 0, playhead: null, consumed: 0, underruns: 0, reported: 0,
  buffered: 0, errors: [], ws: null, ctx: null, node: null, frames: 0, ver: -1, splices: 0,
  codec: null, codecRate: 44100, decoder: null, decoderKind: null, wasm: null, bytes: 0,
  labels: [], silence: 0, replica: null, reconnects: 0, opened: [],
  receivedTo: null,                         // where the audio received ends (codec's rate)
  gain: null, volume: 1, channelName: '', nowPlaying: '',
};
const retry = { attempt: 0, timer: null };
const $ = (id) => document.getElementById(id);
window.addEventListener('error', (e) => state.errors.push(String(e.message)));

function showParams(p) {
  if (!p) return;
  state.params = p;
  if (p.name) state.channelName = p.name;
  $('p-model').textContent = p.model;
  const inst = state.instruments.find((i) => i.program === p.instrument);
  $('p-instrument').textContent = inst ? inst.name : `program ${p.instrument}`;
  $('p-bpm').textContent = Math.round(p.bpm);
  $('p-temperature').textContent = Number(p.temperature).toFixed(2);
  $('p-top-p').textContent = Number(p.top_p ?? 1).toFixed(2);
  showNowPlaying();
}

// One line that changes when the channel, model, instrument, key or BPM does (not with every
// note), and the same for the lock screen, headphones and car (Media Session).
function showNowPlaying() {
  const p = state.params;
  if (!p) return;
  const key = $('p-key').textContent === '–' ? '' : $('p-key').textContent;
  const parts = [state.channelName || state.channel, p.model, $('p-instrument').textContent,
    key, `${Math.round(p.bpm)} BPM`].filter(Boolean);
  const line = parts.join(' · ');
  if (line === state.nowPlaying) return;
  state.nowPlaying = line;
  $('now-playing').textContent = line;
  document.title = `${state.channelName || state.channel} — Play Bach`;
  if ('mediaSession' in navigator && window.MediaMetadata) {
    navigator.mediaSession.metadata = new MediaMetadata({
      title: state.channelName || state.channel, artist: `Play Bach · ${p.model}`,
      album: [$('p-instrument').textContent, key].filter(Boolean).join(' · '),
      artwork: [{ src: 'favicon.svg', sizes: 'any', type: 'image/svg+xml' }],
    });
  }
}

if ('mediaSession' in navigator) {
  const play = () => { if (!state.ws) start().catch((e) => state.errors.push(String(e))); };
  for (const [action, handler] of [['play', play], ['pause', () => state.ws && stop()],
    ['stop', () => state.ws && stop()]]) {
    try { navigator.mediaSession.setActionHandler(action, handler); } catch (e) { /* unsupported */ }
  }
}

// Volume: a gain after the worklet, remembered on this device.
function setVolume(v) {
  state.volume = Math.min(1, Math.max(0, Number(v)));
  $('volume').value = String(state.volume);
  try { localStorage.setItem('playbach-volume', String(state.volume)); } catch (e) { /* private mode */ }
  if (state.gain) state.gain.gain.setTargetAtTime(state.volume, state.ctx.currentTime, 0.02);
}
$('volume').addEventListener('input', (e) => setVolume(e.target.value));
try {
  const saved = localStorage.getItem('playbach-volume');
  if (saved !== null) setVolume(saved);
} catch (e) { /* private mode */ }

// The channel's link (its id is its key; a listen token is personal and stays out of it):
// the phone's share sheet where there is one, else the clipboard.
function channelLink() {
  return `${location.origin}${location.pathname}?channel=${encodeURIComponent(state.channel)}`;
}
$('share').addEventListener('click', async () => {
  const url = channelLink(), button = $('share');
  try {
    if (navigator.share && matchMedia('(pointer: coarse)').matches) {
      await navigator.share({ title: `${state.channelName || state.channel} — Play Bach`, url });
      return;
    }
    await navigator.clipboard.writeText(url);
    button.textContent = 'Link copied';
  } catch (e) {
    if (e && e.name === 'AbortError') return;  // the share sheet closed
    window.prompt('Copy this link:', url);
  }
  setTimeout(() => { button.textContent = 'Copy link'; }, 2000);
});

async function loadLists() {
  try {
    state.instruments = await (await fetch('/api/instruments')).json();
    const channels = await (await fetch('/api/channels')).json();  // the public ones
    if (!channels.some((c) => c.id === state.channel)) {   // a private one: its link is its key
      const res = await fetch(`/api/channels/${encodeURIComponent(state.channel)}`);
      if (res.ok) channels.unshift(await res.json());
    }
    const sel = $('channel');
    sel.innerHTML = '';
    const ids = channels.map((c) => c.id);
    if (!ids.includes(state.channel)) ids.unshift(state.channel);
    const names = Object.fromEntries(channels.map((c) => [c.id, c.params.name || c.id]));
    for (const id of ids) sel.add(new Option(names[id] || id, id, false, id === state.channel));
    state.channelName = names[state.channel] || state.channel;
    const mine = channels.find((c) => c.id === state.channel);
    if (mine) showParams(mine.params);
  } catch (e) { $('m-error').textContent = 'the server is unreachable'; }
  const cid = encodeURIComponent(state.channel);
  const token = q.get('token') ? `&token=${encodeURIComponent(q.get('token'))}` : '';
  $('wav').href = `/stream/${cid}.wav`;
  $('dl-mid').href = `/api/channels/${cid}/recent.mid?seconds=120${token}`;
  $('dl-wav').href = `/api/channels/${cid}/recent.wav?seconds=120${token}`;
}

// A download before anything played would get the gateway's 404 page: say it here instead.
for (const id of ['dl-mid', 'dl-wav']) {
  $(id).addEventListener('click', (e) => {
    if (!state.consumed) {
      e.preventDefault();
      $('m-error').textContent = 'nothing heard yet: press ▶ Play, listen, then download';
    }
  });
}
$('help-toggle').addEventListener('click', () => {
  const help = $('help');
  help.hidden = !help.hidden;
  $('help-toggle').setAttribute('aria-expanded', String(!help.hidden));
});

// The best path this browser has: Opus packets (an eighth of the bandwidth) decoded by
// WebCodecs, else by libopus in WebAssembly (the npm package opus-decoder, in vendor/, loaded
// only then), else PCM. ?codec=pcm or ?codec=opus forces a codec, ?decoder=wasm the decoder.
async function pickCodec() {
  let webcodecs = false;
  try {
    const config = { codec: 'opus', sampleRate: 48000, numberOfChannels: 1 };  // Opus's own rate
    webcodecs = 'AudioDecoder' in window && (await AudioDecoder.isConfigSupported(config)).supported;
  } catch (e) { /* not this browser */ }
  state.decoderKind = q.get('decoder') || (webcodecs ? 'webcodecs' : 'wasm');
  const codec = q.get('codec') || (webcodecs || typeof WebAssembly === 'object' ? 'opus' : 'pcm');
  if (codec === 'opus' && state.decoderKind === 'wasm' && !state.wasm) {
    try { state.wasm = await wasmDecoder(); } catch (e) { return 'pcm'; }  // PCM, the last resort
  }
  return codec;
}

async function wasmDecoder() {
  if (!window['opus-decoder']) {
    await new Promise((resolve, reject) => {
      const script = Object.assign(document.createElement('script'),
        { src: 'vendor/opus-decoder.min.js', charset: 'UTF-8', onload: resolve, onerror: reject });
      document.head.appendChild(script);
    });
  }
  const decoder = new window['opus-decoder'].OpusDecoder({ sampleRate: 48000, channels: 1 });
  await decoder.ready;
  return {
    state: 'configured',
    decode(at, ver, data) {  // synchronous: the samples come back at once
      const { channelData, samplesDecoded } = decoder.decodeFrame(data);
      if (samplesDecoded) play(at, ver, channelData[0].slice(0, samplesDecoded));  // a copy
    },
  };
}

const takes = new Map();  // Opus packet position -> its take, until decoded

function play(pos, ver, samples) {
  // positions are at the codec's rate; notes at the stream's
  const at = Math.round((pos * state.rate) / state.codecRate);
  if (ver > state.ver) {                    // a new take from here on: its notes replace the old
    if (state.ver >= 0) state.splices++;
    state.notes = state.notes.filter((n) => n.ver >= ver || n.pos < at);
    state.ver = ver;
  }
  state.node.port.postMessage({ type: 'pcm', pos, ver, samples }, [samples.buffer]);
  state.frames++;
}

function openDecoder() {
  if (state.decoderKind === 'wasm') return state.wasm;
  const decoder = new AudioDecoder({
    output: (data) => {
      const samples = new Float32Array(data.numberOfFrames);
      data.copyTo(samples, { planeIndex: 0, format: 'f32-planar' });
      const pos = Math.round((data.timestamp * state.codecRate) / 1e6);  // µs, as we gave it
      data.close();
      const ver = takes.get(pos) ?? state.ver;
      takes.delete(pos);
      play(pos, ver, samples);
    },
    error: (e) => state.errors.push(`decoder: ${e.message}`),
  });
  decoder.configure({ codec: 'opus', sampleRate: state.codecRate, numberOfChannels: 1 });
  return {
    get state() { return decoder.state; },
    decode(at, ver, data) {
      takes.set(at, ver);
      const timestamp = Math.round((at * 1e6) / state.codecRate);  // WebCodecs counts µs
      decoder.decode(new EncodedAudioChunk({ type: 'key', timestamp, data }));
    },
  };
}

function onMessage(ev) {
  if (typeof ev.data !== 'string') {
    // a frame: u64 position, u32 take, then s16le PCM or an Opus packet (the gateway's HEADER)
    const view = new DataView(ev.data);
    const pos = Number(view.getBigUint64(0, true));
    const ver = view.getUint32(8, true);
    state.bytes += ev.data.byteLength;
    if (state.codec === 'opus') {           // then packets of 20 ms, each behind a u16 length
      if (!state.decoder || state.decoder.state === 'closed') return;
      let at = pos;
      for (let off = 12; off + 2 <= ev.data.byteLength; at += state.codecRate / 50) {
        const length = view.getUint16(off, true);
        state.decoder.decode(at, ver, new Uint8Array(ev.data, off + 2, length));
        off += 2 + length;
      }
      state.receivedTo = Math.max(state.receivedTo ?? 0, at);
      return;
    }
    const pcm = new Int16Array(ev.data, 12);
    state.receivedTo = Math.max(state.receivedTo ?? 0, pos + pcm.length);
    const samples = new Float32Array(pcm.length);
    for (let i = 0; i < pcm.length; i++) samples[i] = pcm[i] / 32768;
    play(pos, ver, samples);
    return;
  }
  const msg = JSON.parse(ev.data);
  if (msg.type === 'hello') {
    retry.attempt = 0;                      // a gateway answers: the next loss retries fast
    state.replica = msg.replica;
    state.rate = msg.rate;
    state.codecRate = msg.codec_rate || msg.rate;
    state.node.port.postMessage({ type: 'rate', srcRate: state.codecRate });
    if (state.codec === 'opus' && (!state.decoder || state.decoder.state === 'closed')) state.decoder = openDecoder();
    showParams(msg.params);
  }
  else if (msg.type === 'notes') {
    for (const n of msg.notes) state.notes.push({ ...n, ver: msg.ver || 0 });
    state.noteCount += msg.notes.length;
    $('m-notes').textContent = state.noteCount;
  } else if (msg.type === 'params') showParams(msg.params);
  else if (msg.type === 'model') $('status').textContent = `playing · ${msg.message}`;
  else if (msg.type === 'error') $('m-error').textContent = msg.message;
}

// A lost connection (its gateway died or restarted) is retried at once and then less often:
// ~100 ms, doubling to 0.5 s (a restarted gateway is found within that of answering), each
// jittered so that a crowd cut off together does not return together. The worklet keeps playing what it holds meanwhile, and the new connection
// resumes where the audio received ends (?from=), so a quick reconnect is never heard.
function retryDelay() {
  const base = Math.min(500, 100 * 2 ** retry.attempt++);
  return base * (0.5 + Math.random());
}

function connect() {
  const proto = location.protocol === 'https:' ? 'wss' : 'ws';
  const query = new URLSearchParams({ codec: state.codec });
  if (q.get('token')) query.set('token', q.get('token'));
  if (state.receivedTo !== null) query.set('from', String(Math.floor(state.receivedTo)));
  const ws = new WebSocket(`${proto}://${location.host}/ws/${encodeURIComponent(state.channel)}?${query}`);
  ws.binaryType = 'arraybuffer';
  ws.onopen = () => {
    state.opened.push(Date.now());
    $('status').textContent = 'playing'; $('m-error').textContent = '';
  };
  ws.onmessage = onMessage;
  ws.onclose = (e) => {
    if (state.ws !== ws) return;
    if (e.code === 1008) {                  // refused (no such channel, a token, the origin):
      state.ws = null;                      // retrying cannot help, so say why and stop
      $('status').textContent = 'stopped';
      $('m-error').textContent = e.reason || 'the server refused this player';
      $('play').textContent = '▶ Play';
      return;
    }
    state.reconnects++;
    $('status').textContent = e.reason ? `reconnecting (${e.reason})…` : 'reconnecting…';
    retry.timer = setTimeout(() => { if (state.ws === ws) state.ws = connect(); }, retryDelay());
  };
  return ws;
}

async function start() {
  if (!state.ctx) {
    // The device picks its own rate (often 48 kHz); the worklet resamples. ?ctxrate= forces one.
    const forced = Number(q.get('ctxrate')) || undefined;
    state.ctx = new AudioContext({ latencyHint: 'interactive', sampleRate: forced });
    await state.ctx.audioWorklet.addModule('worklet.js');
    state.node = new AudioWorkletNode(state.ctx, 'pcm-player', {
      outputChannelCount: [2], processorOptions: { srcRate: state.rate } });
    state.node.port.onmessage = (e) => {
      const s = e.data;
      // the worklet counts at the codec's rate; the roll and the tests at the stream's
      const scale = state.rate / state.codecRate;
      state.playhead = s.playhead === null ? null : s.playhead * scale;
      state.consumed = s.consumed * scale; state.underruns = s.underruns;
      state.buffered = s.buffered; state.silence = s.silence / state.codecRate;
      $('m-buffer').textContent = `${Math.round(s.buffered * 1000)} ms (aim ${Math.round(s.target * 1000)} ms)`;
      $('m-underruns').textContent = s.underruns;
    };
    state.gain = state.ctx.createGain();
    state.gain.gain.value = state.volume;
    state.node.connect(state.gain).connect(state.ctx.destination);
  }
  await state.ctx.resume();
  state.codec = state.codec || await pickCodec();
  state.ws = connect();
  $('play').textContent = '■ Stop';
  $('play').setAttribute('aria-pressed', 'true');
  if ('mediaSession' in navigator) navigator.mediaSession.playbackState = 'playing';
}

function stop() {
  const ws = state.ws;
  state.ws = null;
  clearTimeout(retry.timer);
  state.receivedTo = null;                  // the next Play starts at the live point
  if (ws) ws.close();
  if (state.ctx) state.ctx.suspend();
  if (state.node) state.node.port.postMessage({ type: 'reset' });
  if (state.decoder && state.decoder.state !== 'closed') state.decoder.close();
  state.decoder = null;
  state.notes = [];
  $('play').textContent = '▶ Play';
  $('play').setAttribute('aria-pressed', 'false');
  $('status').textContent = 'stopped';
  if ('mediaSession' in navigator) navigator.mediaSession.playbackState = 'paused';
}

// Underruns go back to the gateway, which shows them in /api/stats.
setInterval(() => {
  const d = state.underruns - state.reported;
  if (d > 0 && state.ws && state.ws.readyState === 1) {
    state.ws.send(JSON.stringify({ type: 'underrun', count: d }));
    state.reported = state.underruns;
  }
}, 2000);

// The piano roll: time runs right to left; the line is "now"; notes to its right are coming.
function draw() {
  const c = $('roll');
  const w = c.width = c.clientWidth * devicePixelRatio;
  const h = c.height = c.clientHeight * devicePixelRatio;
  const g = c.getContext('2d');
  g.fillStyle = '#0e1013'; g.fillRect(0, 0, w, h);
  const span = 8, nowX = w * 0.75, low = 24, high = 96;   // seconds shown, MIDI range
  const xOf = (pos) => nowX + ((pos - state.playhead) / state.rate) * (w / span);
  g.strokeStyle = '#2a2e35';
  g.fillStyle = '#7d838c';
  g.font = `${11 * devicePixelRatio}px system-ui, sans-serif`;
  state.labels = [];
  for (let m = low; m <= high; m += 12) {   // a line and a label at every C: C1 ... C7
    const y = h - ((m - low) / (high - low)) * h;
    g.beginPath(); g.moveTo(0, y); g.lineTo(w, y); g.stroke();
    const label = `C${m / 12 - 1}`;
    g.fillText(label, 4 * devicePixelRatio, y - 3 * devicePixelRatio);
    state.labels.push(label);
  }
  if (state.playhead !== null) {
    const keep = state.playhead - span * state.rate;
    state.notes = state.notes.filter((n) => n.pos + n.duration * state.rate > keep);
    const bar = Math.max(2, h / (high - low));
    for (const n of state.notes) {
      const x0 = xOf(n.pos), x1 = xOf(n.pos + n.duration * state.rate);
      const sounding = n.pos <= state.playhead && state.playhead < n.pos + n.duration * state.rate;
      if (sounding && n.key && $('p-key').textContent !== n.key) {
        $('p-key').textContent = n.key;
        showNowPlaying();
      }
      g.fillStyle = sounding ? '#ffd27a' : (x0 > nowX ? '#5a6b85' : '#b08a3e');
      for (const m of n.midi) g.fillRect(x0, h - ((m - low) / (high - low)) * h - bar / 2, Math.max(2, x1 - x0 - 1), bar);
    }
  }
  g.strokeStyle = '#e0b25a'; g.beginPath(); g.moveTo(nowX, 0); g.lineTo(nowX, h); g.stroke();
  requestAnimationFrame(draw);
}

$('play').addEventListener('click', () => (state.ws ? stop() : start().catch((e) => {
  state.errors.push(String(e)); $('m-error').textContent = `cannot play: ${e}`; })));
$('channel').addEventListener('change', (e) => {
  const playing = !!state.ws; stop(); state.channel = e.target.value;
  $('p-key').textContent = '–';             // the new channel's key comes with its notes
  history.replaceState(null, '', `?channel=${encodeURIComponent(state.channel)}`);
  loadLists().then(() => { if (playing) start(); });
});
if (q.get('embed')) document.body.classList.add('embed');  // inside the control room
loadLists();
requestAnimationFrame(draw);
