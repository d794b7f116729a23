// Audio plumbing: one AudioContext, the microphone worklet (-> 16 kHz PCM16 frames) and the
// player worklet (24 kHz PCM16 in, jitter-buffered). No protocol here: see session.js.

export class AudioIO {
  /**
   * @param {object} handlers onMicFrame(ArrayBuffer), onMicLevel(0..1),
   *   onPlayerStats({played, buffered, level})
   */
  constructor(handlers = {}) {
    this.handlers = handlers;
    this.context = null;
    this.player = null;
    this.mic = null; // {stream, source, node}
    this.modules = new Map(); // worklet module URL -> addModule() promise, loaded once
  }

  #load(name) {
    const url = new URL(name, import.meta.url).href;
    if (!this.modules.has(url)) {
      const loading = this.context.audioWorklet.addModule(url);
      loading.catch(() => this.modules.delete(url)); // let a later call try again
      this.modules.set(url, loading);
    }
    return this.modules.get(url);
  }

  /**
   * Create (or wake) the AudioContext. Call it synchronously from a click handler: browsers only
   * let audio start after a user gesture.
   */
  prepare() {
    if (!this.context) this.context = new AudioContext({ latencyHint: "interactive" });
    if (this.context.state === "suspended") this.context.resume();
    return this.context;
  }

  /** Load the player worklet once; later calls just flush what it still holds. */
  async startPlayer() {
    const context = this.prepare();
    if (this.player) {
      this.flush();
      return;
    }
    await this.#load("player-worklet.js");
    const node = new AudioWorkletNode(context, "player-processor", {
      numberOfInputs: 0,
      outputChannelCount: [1],
    });
    node.port.onmessage = (event) => this.handlers.onPlayerStats?.(event.data);
    node.connect(context.destination);
    this.player = node;
  }

  /** Queue one binary frame from the proxy (PCM16 24 kHz mono). The buffer is transferred. */
  play(buffer) {
    this.player?.port.postMessage(buffer, [buffer]);
  }

  /** Drop queued model audio at once (the user interrupted the model). */
  flush() {
    this.player?.port.postMessage({ type: "flush" });
  }

  /** Ask for the microphone and start sending frames. Throws an Error with plain words. */
  async startMic() {
    const context = this.prepare();
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({
        audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
      });
    } catch (error) {
      throw new Error(micProblem(error));
    }
    this.stopMic();
    await this.#load("mic-worklet.js");
    const source = context.createMediaStreamSource(stream);
    const node = new AudioWorkletNode(context, "mic-processor", {
      numberOfInputs: 1,
      numberOfOutputs: 1,
      outputChannelCount: [1],
      channelCount: 1,
      channelCountMode: "explicit", // mix stereo mics down to mono
    });
    node.port.onmessage = ({ data }) => {
      this.handlers.onMicLevel?.(data.level);
      this.handlers.onMicFrame?.(data.pcm);
    };
    // The worklet outputs silence; connecting it to the destination keeps it being processed.
    source.connect(node).connect(context.destination);
    this.mic = { stream, source, node };
  }

  /** Release the microphone (the browser's recording indicator goes off). */
  stopMic() {
    if (!this.mic) return;
    const { stream, source, node } = this.mic;
    node.port.onmessage = null;
    source.disconnect();
    node.disconnect();
    stream.getTracks().forEach((track) => track.stop());
    this.mic = null;
    this.handlers.onMicLevel?.(0);
  }
}

function micProblem(error) {
  switch (error?.name) {
    case "NotAllowedError":
    case "SecurityError":
      return "Microphone access was refused. Allow it in the browser to talk; you can still type.";
    case "NotFoundError":
    case "OverconstrainedError":
      return "No microphone was found. You can still type.";
    case "NotReadableError":
      return "The microphone is in use by another program. You can still type.";
    default:
      if (!navigator.mediaDevices) return "This page needs HTTPS (or localhost) to use the microphone. You can still type.";
      return `The microphone could not start (${error?.message ?? error}). You can still type.`;
  }
}
