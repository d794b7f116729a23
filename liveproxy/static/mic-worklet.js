// AudioWorklet: microphone -> PCM16 little-endian mono at 16 kHz, in ~100 ms frames.
//
// Runs on the audio thread. `sampleRate` (a global here) is the AudioContext's rate, often 48 kHz
// or 44.1 kHz; each output sample is the average of the input samples it covers (a box filter:
// crude, but it keeps the worst aliasing out of the 8 kHz band the model listens to). When the
// context runs slower than 16 kHz it interpolates linearly instead.
// Posts {pcm: ArrayBuffer, level: 0..1 (RMS)} for every frame.

const TARGET_RATE = 16000;
const FRAME_SAMPLES = 1600; // 100 ms at 16 kHz

class MicProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.step = sampleRate / TARGET_RATE; // input samples per output sample
    this.history = new Float32Array(0); // input samples not fully consumed yet
    this.pos = 0; // fractional read position in `history`
    this.frame = new Int16Array(FRAME_SAMPLES);
    this.filled = 0;
    this.energy = 0;
  }

  process(inputs, outputs) {
    const channels = inputs[0];
    if (channels && channels.length > 0) this.consume(channels[0]);
    outputs[0]?.forEach((channel) => channel.fill(0)); // silent: the node only feeds the graph clock
    return true;
  }

  consume(block) {
    const input = new Float32Array(this.history.length + block.length);
    input.set(this.history);
    input.set(block, this.history.length);
    const step = this.step;
    while (this.pos + Math.max(step, 1) + 1 <= input.length) {
      let value;
      if (step > 1) {
        const start = Math.floor(this.pos);
        const end = Math.floor(this.pos + step);
        let sum = 0;
        for (let i = start; i < end; i++) sum += input[i];
        value = sum / (end - start);
      } else {
        const i = Math.floor(this.pos);
        value = input[i] + (input[i + 1] - input[i]) * (this.pos - i);
      }
      this.push(value);
      this.pos += step;
    }
    const used = Math.floor(this.pos);
    this.history = input.slice(used);
    this.pos -= used;
  }

  push(value) {
    const clamped = Math.max(-1, Math.min(1, value));
    this.frame[this.filled++] = clamped < 0 ? clamped * 0x8000 : clamped * 0x7fff;
    this.energy += clamped * clamped;
    if (this.filled === FRAME_SAMPLES) {
      const pcm = this.frame.buffer;
      const level = Math.sqrt(this.energy / FRAME_SAMPLES);
      this.port.postMessage({ pcm, level }, [pcm]); // transfer, no copy
      this.frame = new Int16Array(FRAME_SAMPLES);
      this.filled = 0;
      this.energy = 0;
    }
  }
}

registerProcessor("mic-processor", MicProcessor);
