// Google's own JS SDK (@google/genai, bundled in vendor/genai.mjs) talking to liveproxy's
// Gemini-native endpoint, with no UI in it: what an app written for Gemini changes is steps 1-2.
//
//   1. POST api/auth {"ephemeral": {...}}  -> {name: "auth_tokens/...", expireTime, ...}: one
//      token per conversation (it starts one session, and resumes it), minted by the page itself.
//   2. new GoogleGenAI({apiKey: name, httpOptions: {apiVersion: "v1alpha", baseUrl: <liveproxy>}})
//      then ai.live.connect({model, config, callbacks}): the SDK opens
//      ws(s)://<liveproxy>//ws/google.ai.generativelanguage.v1alpha.GenerativeService.
//      BidiGenerateContentConstrained?access_token=auth_tokens/... and speaks Gemini's protocol.
//   3. The setup asks for sessionResumption; when the socket drops (RESUMABLE_CLOSES), connect()
//      with the same token and the latest sessionResumptionUpdate handle continues the
//      conversation (resuming spends none of the token's uses, until its expireTime). A server
//      that refuses the resumption (1007, 1008: it no longer knows the token or the handle) ends
//      it. liveproxy absorbs Gemini's own goAway and upstream drops: the SDK sees none.

import { GoogleGenAI } from "./vendor/genai.mjs";

/**
 * Where liveproxy is: this page's own server (the page is at its /demo/, so one level up), or the
 * one named by `?server=<url>` (a page served from another origin; that origin must be in the
 * server's ALLOWED_ORIGINS).
 */
export const SERVER = new URL(new URLSearchParams(location.search).get("server") ?? "..", document.baseURI);

/** Close codes the conversation survives: the server went away, failed or restarts, the network dropped. */
const RESUMABLE_CLOSES = new Set([1001, 1006, 1011, 1012, 1013]);
/** Seconds before each reconnection attempt; after the last one the session ends. */
const RETRY_DELAYS = [0.5, 1, 2, 4, 4];
/** The largest PCM frame sent at once (bytes): the microphone worklet sends 3200. */
const MAX_AUDIO_FRAME = 64 * 1024;

/** Close codes of a socket refused at its setup: another attempt would get the same answer. */
const REFUSALS = new Set([1007, 1008]);

/** An error the page can show as it is; `retry`: another attempt may succeed; `code`: the close
 * code that said so, if a socket closed. */
export class SdkSessionError extends Error {
  constructor(message, { retry = false, code = null } = {}) {
    super(message);
    this.retry = retry;
    this.code = code;
  }
}

/** POST api/auth {"ephemeral": ephemeral}: a token's name (`auth_tokens/...`). */
export async function mintToken(ephemeral = {}) {
  let response;
  try {
    response = await fetch(new URL("api/auth", SERVER), {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ ephemeral }),
    });
  } catch {
    // A refused CORS preflight looks the same to a page as a server that is down.
    throw new SdkSessionError(
      `Could not reach the server at ${SERVER.origin}: it is down, or it does not allow ` +
        `this page's origin (${location.origin}; see ALLOWED_ORIGINS).`,
      { retry: true },
    );
  }
  const data = await response.json().catch(() => ({}));
  if (!response.ok || typeof data?.name !== "string") {
    const message = data?.error?.message ?? response.statusText;
    throw new SdkSessionError(`The server refused a token: ${message} (HTTP ${response.status}).`, {
      retry: [502, 503, 504].includes(response.status),
    });
  }
  return data.name;
}

/** base64 of an ArrayBuffer (what the SDK's `inlineData`/`audio.data` carry). */
export function toBase64(buffer) {
  const bytes = new Uint8Array(buffer);
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

/** The ArrayBuffer a base64 string holds. */
export function fromBase64(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes.buffer;
}

/**
 * One conversation through the SDK, across sockets. `handlers` are optional callbacks:
 *   onMessage(LiveServerMessage), onReconnecting({code, reason, attempt}),
 *   onReconnected({handle}), onEnd({code, reason, local, text})
 */
export class SdkSession {
  #wake = null; // cuts short the wait before the next reconnection attempt (close())

  constructor(handlers = {}) {
    this.handlers = handlers;
    this.session = null; // the SDK's Session while a socket is open
    this.token = null; // the conversation's token (auth_tokens/...), minted for its first socket
    this.handle = null; // the latest resumable sessionResumptionUpdate's newHandle
    this.closedByUs = false;
    this.reconnects = 0;
  }

  /** Mint a token and connect; resolves once the setup is complete. */
  async start({ model, config, ephemeral = {} }) {
    this.model = model;
    this.config = config;
    this.ephemeral = ephemeral;
    await this.#connect();
  }

  /** One socket, set up: the conversation's first, or one resuming `this.handle` with the same
   * token. Throws SdkSessionError when it closed (or failed) before its setup completed. */
  async #connect() {
    this.token ??= await mintToken(this.ephemeral);
    const ai = new GoogleGenAI({ apiKey: this.token, httpOptions: { apiVersion: "v1alpha", baseUrl: SERVER.href } });
    const resuming = this.handle !== null;
    let session = null;
    let early = null; // the close of a socket that ended before its setup completed
    try {
      session = await ai.live.connect({
        model: this.model,
        config: { ...this.config, sessionResumption: resuming ? { handle: this.handle } : {} },
        callbacks: {
          onmessage: (message) => this.#receive(message),
          onclose: (event) => {
            if (session === null) early = event;
            else if (this.session === session) this.#closed(event);
          },
        },
      });
    } catch (error) {
      throw setupFailure(early, resuming, error);
    }
    this.session = session;
  }

  #receive(message) {
    const update = message.sessionResumptionUpdate;
    if (update?.resumable && update.newHandle) this.handle = update.newHandle;
    this.handlers.onMessage?.(message);
  }

  async #closed(event) {
    this.session = null;
    const ending = { code: event.code, reason: event.reason, local: this.closedByUs };
    if (this.closedByUs || !RESUMABLE_CLOSES.has(event.code) || !this.handle) {
      this.#end(ending);
      return;
    }
    let failure = null; // the last attempt's error, said at the end
    for (const [attempt, delay] of RETRY_DELAYS.entries()) {
      this.handlers.onReconnecting?.({ ...ending, attempt: attempt + 1 });
      await new Promise((resolve) => {
        this.#wake = resolve;
        setTimeout(resolve, delay * 1000);
      });
      if (this.closedByUs) break;
      try {
        await this.#connect();
      } catch (error) {
        if (error instanceof SdkSessionError && !error.retry) {
          this.#end({ ...ending, code: error.code ?? ending.code, text: error.message });
          return;
        }
        failure = error;
        continue; // the server is not back yet, or the socket failed before its setup
      }
      if (this.closedByUs) {
        // Closed while connecting: this close is not a drop (its onclose finds no session).
        const session = this.session;
        this.session = null;
        session?.close();
        break;
      }
      this.reconnects += 1;
      this.handlers.onReconnected?.({ handle: this.handle });
      return;
    }
    const text = failure && !this.closedByUs ? `${describeClose(ending)} Last attempt: ${failure.message}` : undefined;
    this.#end({ ...ending, local: this.closedByUs, text });
  }

  #end(ending) {
    this.handlers.onEnd?.({ ...ending, text: ending.text ?? describeClose(ending) });
  }

  /** One typed user turn. */
  sendText(text) {
    this.session?.sendClientContent({ turns: [{ role: "user", parts: [{ text }] }], turnComplete: true });
  }

  /** One frame of 16 kHz PCM16 mono microphone audio (an ArrayBuffer). */
  sendAudio(pcm) {
    if (pcm.byteLength > MAX_AUDIO_FRAME) throw new RangeError(`an audio frame over ${MAX_AUDIO_FRAME} bytes`);
    this.session?.sendRealtimeInput({ audio: { data: toBase64(pcm), mimeType: "audio/pcm;rate=16000" } });
  }

  /** The microphone paused: lets the model answer what it heard so far. */
  endAudio() {
    this.session?.sendRealtimeInput({ audioStreamEnd: true });
  }

  /** Answer function calls: [{id, name, response}]. */
  answerTools(functionResponses) {
    this.session?.sendToolResponse({ functionResponses });
  }

  /** End the conversation: close the socket, stop any reconnection. */
  close() {
    this.closedByUs = true;
    this.#wake?.();
    if (this.session) this.session.close();
  }
}

/** Why a socket ended before its setup completed (`close`: its CloseEvent, if it had one;
 * `error`: the SDK's). A refusal is final; anything else may pass (the server restarts). */
function setupFailure(close, resuming, error) {
  if (!close) return new SdkSessionError(`The connection failed: ${error.message}`, { retry: true });
  const { code, reason } = close;
  const details = reason ? ` Details: ${reason}` : "";
  if (!REFUSALS.has(code)) {
    return new SdkSessionError(`The connection closed during its setup (close code ${code}).${details}`, {
      retry: true,
      code,
    });
  }
  const words = resuming
    ? "The conversation could not be continued: the server refused to resume it."
    : "The server refused the session.";
  return new SdkSessionError(`${words}${details} (close code ${code})`, { code });
}

/** Plain words for a socket's end. */
export function describeClose({ code, reason, local }) {
  let words;
  if (local) words = "You ended the session.";
  else if (code === 1000) words = "The session ended.";
  else if (code === 1007 || code === 1008) words = "The server refused the session.";
  else if (RESUMABLE_CLOSES.has(code)) words = "The connection was lost and the conversation could not continue.";
  else words = "The connection closed.";
  if (reason) words += ` Details: ${reason}`;
  return code ? `${words} (close code ${code})` : words;
}
