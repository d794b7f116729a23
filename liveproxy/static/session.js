// The liveproxy browser protocol, with no UI in it: copy this file into your own app.
//
//   1. POST api/auth            -> {session_token, session_time_limit}
//   2. WebSocket ws?token=...   (the token is good for one connection, for 30 s)
//   3. first frame: {"setup": {...}} (snake_case is fine), then binary PCM16 16 kHz mono audio,
//      {"type": "text", "text": ...} turns and {"tool_response": {...}} answers.
//   4. the proxy sends binary PCM16 24 kHz mono audio and camelCase JSON events; the last one is
//      {"sessionEnd": ...} or {"error": ...}, then the socket closes with a meaningful code.

/** Plain words for the proxy's sessionEnd reasons. */
const END_REASONS = {
  time_limit: "The session reached its time limit.",
  upstream_closed: "The model ended the session.",
  shutdown: "The server is shutting down.",
};

/** Plain words for the proxy's error codes (see the endings table of the browser contract). */
const ERROR_CODES = {
  invalid_setup: "The server refused the session settings.",
  message_too_big: "A message was too big for the server.",
  upstream_unavailable: "The model could not be reached.",
  upstream_rejected: "The model refused the session (check the API key and the model).",
  upstream_error: "The connection to the model failed.",
  slow_client: "This page read the answers too slowly.",
  at_capacity: "The server is at capacity; try again later.",
  bad_message: "The server did not understand a message.",
};

/** Plain words for close codes that arrive without a final message. */
const CLOSE_CODES = {
  1000: "The session ended.",
  1001: "The server went away.",
  1006: "The connection was lost.",
  1011: "The server hit an error.",
  1013: "The server is busy; try again later.",
  4003: "The session token was refused (expired or already used).",
};

/** Turn a session's ending into one sentence, always with the close code when there is one. */
export function describeEnding({ code, final, local }) {
  let words;
  if (local) {
    words = "You ended the session.";
  } else if (final?.sessionEnd) {
    const reason = final.sessionEnd.reason;
    words = END_REASONS[reason] ?? `The session ended (${reason}).`;
  } else if (final?.error) {
    const { code: errorCode, message } = final.error;
    words = ERROR_CODES[errorCode] ?? `The session failed (${errorCode}).`;
    if (message) words += ` Details: ${message}`;
  } else {
    words = CLOSE_CODES[code] ?? "The connection closed.";
  }
  return code ? `${words} (close code ${code})` : words;
}

/** An error the page can show as it is. */
export class SessionError extends Error {}

/**
 * Where the proxy is: this page's own server, or the one named by `?server=<url>` (a page served
 * from another origin, e.g. an app's dev server; that origin must be in ALLOWED_ORIGINS).
 */
export const SERVER = new URL(new URLSearchParams(location.search).get("server") ?? ".", document.baseURI);

/**
 * One session with the proxy. `handlers` are optional callbacks:
 *   onOpen(), onSetupComplete(), onAudio(ArrayBuffer), onServerContent(obj), onToolCall(obj),
 *   onToolCallCancellation(obj), onUsage(obj), onSessionStatus(obj), onNotice(error),
 *   onEnd({code, reason, final, local, text})
 */
export class LiveSession {
  constructor(handlers = {}) {
    this.handlers = handlers;
    this.ws = null;
    this.final = null; // the sessionEnd / error message, when one came
    this.closedByUs = false;
  }

  /** Get a token, open the socket and send `setup`. Resolves with the session time limit. */
  async start({ setup, sessionDuration }) {
    const { session_token: token, session_time_limit: limit } = await this.#auth(sessionDuration);
    const url = new URL("ws", SERVER);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    url.searchParams.set("token", token);

    const ws = new WebSocket(url);
    ws.binaryType = "arraybuffer"; // audio frames arrive as ArrayBuffer, not Blob
    this.ws = ws;
    ws.addEventListener("open", () => {
      ws.send(JSON.stringify({ setup }));
      this.handlers.onOpen?.();
    });
    ws.addEventListener("message", (event) => this.#receive(event.data));
    ws.addEventListener("close", (event) => this.#closed(event));
    return limit;
  }

  async #auth(sessionDuration) {
    const body = Number.isInteger(sessionDuration) ? { session_duration: sessionDuration } : {};
    let response;
    try {
      response = await fetch(new URL("api/auth", SERVER), {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
    } catch {
      // A refused CORS preflight looks the same to a page as a server that is down.
      throw new SessionError(
        `Could not reach the server at ${SERVER.origin}: it is down, or it does not allow ` +
          `this page's origin (${location.origin}; see ALLOWED_ORIGINS).`,
      );
    }
    const data = await response.json().catch(() => ({}));
    if (!response.ok) {
      const message = data?.error?.message ?? response.statusText;
      throw new SessionError(`The server refused a new session: ${message} (HTTP ${response.status}).`);
    }
    return data;
  }

  #receive(data) {
    if (data instanceof ArrayBuffer) {
      this.handlers.onAudio?.(data);
      return;
    }
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      return; // not JSON: nothing the contract defines
    }
    const h = this.handlers;
    if (message.setupComplete) h.onSetupComplete?.();
    if (message.serverContent) h.onServerContent?.(message.serverContent);
    if (message.toolCall) h.onToolCall?.(message.toolCall);
    if (message.toolCallCancellation) h.onToolCallCancellation?.(message.toolCallCancellation);
    if (message.usageMetadata) h.onUsage?.(message.usageMetadata);
    if (message.sessionStatus) h.onSessionStatus?.(message.sessionStatus);
    if (message.sessionEnd) this.final = message;
    if (message.error) {
      // bad_message is the one error the session survives; every other error is its last word.
      if (message.error.code === "bad_message") h.onNotice?.(message.error);
      else this.final = message;
    }
  }

  #closed(event) {
    const ending = {
      code: event.code,
      reason: event.reason,
      final: this.final,
      local: this.closedByUs && !this.final,
    };
    ending.text = describeEnding(ending);
    this.ws = null;
    this.handlers.onEnd?.(ending);
  }

  get isOpen() {
    return this.ws?.readyState === WebSocket.OPEN;
  }

  /** Send one binary frame of PCM16 16 kHz mono audio. */
  sendAudio(buffer) {
    if (this.isOpen) this.ws.send(buffer);
  }

  /** A typed user turn. */
  sendText(text) {
    this.#sendJson({ type: "text", text });
  }

  /** Tell the model the microphone paused, so it stops waiting for more speech. */
  sendAudioStreamEnd() {
    this.#sendJson({ type: "audio_stream_end" });
  }

  /** Answer a toolCall: `responses` = [{id, name, response: {...}}]. */
  sendToolResponse(responses) {
    this.#sendJson({ tool_response: { function_responses: responses } });
  }

  #sendJson(message) {
    if (this.isOpen) this.ws.send(JSON.stringify(message));
  }

  /** End the session from this side (close 1000). */
  close() {
    if (!this.ws) return;
    this.closedByUs = true;
    this.ws.close(1000, "client disconnected");
  }
}
