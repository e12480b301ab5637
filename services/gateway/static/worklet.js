// Play Bach's AudioWorklet: a ring buffer of the stream's samples, an adaptive jitter buffer,
// and resampling from the stream's rate to the device's (44.1 kHz stream on a 48 kHz phone).
// The jitter buffer, in seconds. Its floor covers a reconnect: a gateway that dies is
// replaced by another within about a retry (100 ms) and a resume, which this much audio
// plays over (tests/live/test_faults.py); below it, one such loss would be heard.
const START_S = 0.3, FLOOR_S = 0.3, MOST_S = 2.0;

class PcmPlayer extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const o = options.processorOptions || {};
    this.srcRate = o.srcRate || 44100;
    this.ring = new Float32Array(this.srcRate * 16);  // 16 s: far more than ever buffered
    this.write = 0;        // samples written (absolute count)
    this.read = 0;         // fractional read position (absolute count)
    this.firstPos = null;  // stream sample position of ring sample 0
    this.ver = -1;         // the take written last: a newer one replaces audio from its pos
    this.sizeBuffer();
    this.playing = false;
    this.underruns = 0;
    this.silent = 0;       // output samples (at the stream's rate) of silence after an underrun
    this.consumed = 0;
    this.calmBlocks = 0;
    this.port.onmessage = (e) => this.receive(e.data);
  }

  receive(msg) {
    if (msg.type === 'pcm') {
      if (this.firstPos === null) this.firstPos = msg.pos;
      const expected = this.firstPos + this.write;
      const newer = msg.ver > this.ver;
      this.ver = Math.max(this.ver, msg.ver);
      if (newer && msg.pos < expected && expected - msg.pos <= this.ring.length) {
        this.replace(msg.pos - this.firstPos, msg.samples);
        return;
      }
      if (msg.pos > expected) {            // a gap (frames dropped upstream): skip ahead
        const gap = Math.min(msg.pos - expected, this.ring.length);
        for (let i = 0; i < gap; i++) this.ring[(this.write + i) % this.ring.length] = 0;
        this.write += gap;
      } else if (expected - msg.pos > this.srcRate * 5) {  // the timeline restarted: follow it
        this.firstPos = msg.pos - this.write;
      } else if (msg.pos < expected) {     // a repeat (backlog overlap): drop what we have
        const skip = expected - msg.pos;
        if (skip >= msg.samples.length) return;
        msg.samples = msg.samples.subarray(skip);
      }
      const s = msg.samples;
      for (let i = 0; i < s.length; i++) this.ring[(this.write + i) % this.ring.length] = s[i];
      this.write += s.length;
      if (this.write - this.read > this.ring.length) this.read = this.write - this.target;
    } else if (msg.type === 'rate' && msg.srcRate !== this.srcRate) {  // the stream's, from hello
      this.srcRate = msg.srcRate;
      this.ring = new Float32Array(this.srcRate * 16);
      this.sizeBuffer();
      this.write = 0; this.read = 0; this.firstPos = null; this.playing = false; this.ver = -1;
    } else if (msg.type === 'reset') {
      this.write = 0; this.read = 0; this.firstPos = null; this.playing = false; this.ver = -1;
    }
  }

  sizeBuffer() {  // start playing when `target` is in; it grows after underruns, shrinks calm
    this.target = Math.round(this.srcRate * START_S);
    this.minTarget = Math.round(this.srcRate * FLOOR_S);
    this.maxTarget = Math.round(this.srcRate * MOST_S);
  }

  // A new take from ring index `at` on: what is not yet played is overwritten and the old
  // take after it forgotten. Where the playhead is already past `at`, the new take starts at
  // the playhead with a short crossfade (the gateway sends takes early, so this is rare).
  replace(at, samples) {
    const len = this.ring.length;
    const from = Math.max(at, Math.ceil(this.read) + 2);
    const fade = from > at ? 128 : 0;
    for (let i = from - at; i < samples.length; i++) {
      const k = (at + i) % len;
      const j = i - (from - at);
      const w = j < fade ? (j + 1) / fade : 1;
      this.ring[k] = j < fade && at + i < this.write ? this.ring[k] * (1 - w) + samples[i] * w : samples[i];
    }
    this.write = Math.max(from, at + samples.length);
  }

  process(inputs, outputs) {
    const out = outputs[0][0];
    const step = this.srcRate / sampleRate;   // sampleRate: the device's, a worklet global
    const need = Math.ceil(out.length * step) + 2;
    const buffered = this.write - this.read;
    if (!this.playing && buffered >= this.target) this.playing = true;
    if (this.playing && buffered < need) {    // ran dry: silence, and keep more next time
      this.playing = false;
      this.underruns++;
      this.target = Math.min(this.maxTarget, Math.round(this.target * 1.5));
      this.calmBlocks = 0;
    }
    if (!this.playing) {
      out.fill(0);
      if (this.underruns) this.silent += out.length * step;
    } else {
      const len = this.ring.length;
      for (let i = 0; i < out.length; i++) {
        const p = this.read + i * step;
        const k = Math.floor(p);
        const f = p - k;
        out[i] = this.ring[k % len] * (1 - f) + this.ring[(k + 1) % len] * f;
      }
      this.read += out.length * step;
      this.consumed += out.length * step;
      // calm for ~10 s: try a smaller buffer (less delay); too full: catch up
      if (++this.calmBlocks > sampleRate * 10 / out.length) {
        this.target = Math.max(this.minTarget, Math.round(this.target * 0.85));
        this.calmBlocks = 0;
      }
      if (this.write - this.read > this.target * 4) this.read = this.write - this.target;
    }
    for (let c = 1; c < outputs[0].length; c++) outputs[0][c].set(out);
    if ((currentFrame / out.length) % 8 === 0) {
      this.port.postMessage({
        type: 'state', playhead: this.firstPos === null ? null : this.firstPos + this.read,
        buffered: (this.write - this.read) / this.srcRate, target: this.target / this.srcRate,
        underruns: this.underruns, consumed: this.consumed, playing: this.playing,
        silence: this.silent,
      });
    }
    return true;
  }
}
registerProcessor('pcm-player', PcmPlayer);
