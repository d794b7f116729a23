// AudioWorklet: plays PCM16 little-endian mono at 24 kHz with a small jitter buffer.
//
// Messages in: an ArrayBuffer of PCM16 (queued), or {type: "flush"} (drop everything queued at
// once: the model was interrupted). Playback starts once PREBUFFER_SECONDS are queued, or once
// audio has waited that long (so a short last chunk still plays); after an underrun it waits
// again. Samples are resampled from 24 kHz to the context's `sampleRate` by linear interpolation.
// Posts {played, buffered, level} about every 50 ms (played: 24 kHz samples sent to the speakers).

const SOURCE_RATE = 24000;
const CAPACITY = SOURCE_RATE * 120; // ring buffer: two minutes; older audio is dropped beyond it
const PREBUFFER_SECONDS = 0.08;
const REPORT_SECONDS = 0.05;

class PlayerProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.ring = new Float32Array(CAPACITY);
    this.written = 0; // samples ever queued (absolute position)
    this.readPos = 0; // absolute, fractional read position
    this.step = SOURCE_RATE / sampleRate;
    this.playing = false;
    this.waited = 0; // seconds queued audio has waited to start
    this.played = 0;
    this.sinceReport = 0;
    this.energy = 0;
    this.frames = 0;
    this.port.onmessage = (event) => this.receive(event.data);
  }

  receive(data) {
    if (data instanceof ArrayBuffer) {
      const pcm = new Int16Array(data, 0, data.byteLength >> 1);
      for (let i = 0; i < pcm.length; i++) this.ring[(this.written + i) % CAPACITY] = pcm[i] / 0x8000;
      this.written += pcm.length;
      if (this.written - this.readPos > CAPACITY) this.readPos = this.written - CAPACITY;
    } else if (data?.type === "flush") {
      this.readPos = this.written;
      this.playing = false;
      this.waited = 0;
    }
  }

  process(_inputs, outputs) {
    const out = outputs[0][0];
    const buffered = this.written - this.readPos;
    if (!this.playing && buffered > 0) {
      this.waited += out.length / sampleRate;
      this.playing = buffered >= PREBUFFER_SECONDS * SOURCE_RATE || this.waited >= PREBUFFER_SECONDS;
    }
    let i = 0;
    if (this.playing) {
      for (; i < out.length; i++) {
        if (this.readPos >= this.written) {
          this.playing = false; // underrun: wait for the jitter buffer to refill
          this.waited = 0;
          break;
        }
        const index = Math.floor(this.readPos);
        const a = this.ring[index % CAPACITY];
        const b = index + 1 < this.written ? this.ring[(index + 1) % CAPACITY] : a;
        const sample = a + (b - a) * (this.readPos - index);
        out[i] = sample;
        this.energy += sample * sample;
        this.readPos += this.step;
        this.played += this.step;
      }
    }
    out.fill(0, i);
    for (let c = 1; c < outputs[0].length; c++) outputs[0][c].set(out);
    this.report(out.length);
    return true;
  }

  report(count) {
    this.frames += count;
    this.sinceReport += count / sampleRate;
    if (this.sinceReport < REPORT_SECONDS) return;
    this.port.postMessage({
      played: Math.round(this.played),
      buffered: Math.max(0, Math.round(this.written - this.readPos)),
      level: Math.sqrt(this.energy / this.frames),
    });
    this.sinceReport = 0;
    this.energy = 0;
    this.frames = 0;
  }
}

registerProcessor("player-processor", PlayerProcessor);
