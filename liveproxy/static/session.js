// The liveproxy browser protocol, with no UI in it: copy this file into your own app.
//
//   1. POST api/auth            -> {session_token, session_time_limit}
//   2. WebSocket ws?token=...   (the token is good for one connection, for 30 s)
//   3. first frame: {"setup": {...}} (snake_case is fine), then binary PCM16 16 kHz mono audio,
//      {"type": "text", "text": ...} turns and {"tool_response": {...}} answers.
//   4. the proxy sends binary PCM16 24 kHz mono audio and camelCase JSON events; the last one is
//      {"sessionEnd": ...} or {"error": ...}, then the socket closes with a meaningful code.
//   5. after setupComplete comes {"sessionResumable": {token, expiresIn}}: when the socket drops
//      or the server restarts, POST api/auth {"resume": token} within expiresIn seconds gives a
//      socket that continues the same conversation. LiveSession does that by itself.

/** Plain words for the proxy's sessionEnd reasons. */
const END_REASONS = {
  time_limit: "The session reached its time limit.",
  upstream_closed: "The model ended the session.",
  shutdown: "The server is shutting down.",
  budget_exhausted: "The usage budget is used up for now.",
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
  state_unavailable: "The server cannot check its limits right now; try again later.",
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

/** Close codes the conversation survives: the server went away or restarts, the network dropped. */
const RESUMABLE_CLOSES = new Set([1001, 1006, 1012, 1013]);
/** Seconds before each reconnection attempt; after the last one the session ends. */
const RETRY_DELAYS = [0.5, 1, 2, 4, 4];
/** api/auth answers worth another attempt: none at all (a restarting server), or "busy for now". */
const RETRY_STATUSES = new Set([0, 502, 503, 504]);

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

/** An error the page can show as it is; `status` is the HTTP status (0: no answer), `code` the
 * proxy's error code. */
export class SessionError extends Error {
  constructor(message, { status = 0, code } = {}) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/**
 * Where the proxy is: this page's own server (the page is at its /demo/, so one level up), or the
 * one named by `?server=<url>` (a page served from another origin, e.g. an app's dev server; that
 * origin must be in ALLOWED_ORIGINS).
 */
export const SERVER = new URL(new URLSearchParams(location.search).get("server") ?? "..", document.baseURI);

/**
 * One session with the proxy, across sockets: after a close the conversation survives (see
 * RESUMABLE_CLOSES) it reconnects with its latest resume token, backing off (RETRY_DELAYS), and
 * starts a new session with the same setup if the server no longer has the conversation.
 * `handlers` are optional callbacks:
 *   onOpen(), onSetupComplete(), onAudio(ArrayBuffer), onServerContent(obj), onToolCall(obj),
 *   onToolCallCancellation(obj), onServerToolCall(obj), onServerToolResult(obj), onUsage(obj), onUsageWarning(obj), onSessionStatus(obj), onNotice(error),
 *   onReconnecting(ending), onReconnected({resumed, timeLimit}),
 *   onEnd({code, reason, final, local, text})
 */
export class LiveSession {
  #wake = null; // cuts short the wait before the next reconnection attempt (close())

  constructor(handlers = {}) {
    this.handlers = handlers;
    this.ws = null;
    this.final = null; // the sessionEnd / error message, when one came
    this.closedByUs = false;
    this.resume = null; // the latest sessionResumable: {token, expiresIn}
    this.retry = null; // while reconnecting: {body, deadline, attempt, granted, error}
  }

  /** Get a token, open the socket and send `setup`. Resolves with the session time limit. */
  async start({ setup, sessionDuration }) {
    this.setup = setup;
    this.newSession = Number.isInteger(sessionDuration) ? { session_duration: sessionDuration } : {};
    const { session_token: token, session_time_limit: limit } = await this.#auth(this.newSession);
    this.#open(token);
    return limit;
  }

  #open(token) {
    const url = new URL("ws", SERVER);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    url.searchParams.set("token", token);

    const ws = new WebSocket(url);
    ws.binaryType = "arraybuffer"; // audio frames arrive as ArrayBuffer, not Blob
    this.ws = ws;
    this.final = null;
    ws.addEventListener("open", () => {
      ws.send(JSON.stringify({ setup: this.setup })); // a resumed session ignores it
      this.handlers.onOpen?.();
    });
    ws.addEventListener("message", (event) => this.#receive(event.data));
    ws.addEventListener("close", (event) => this.#closed(event));
  }

  async #auth(body) {
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
      throw new SessionError(`The server refused a new session: ${message} (HTTP ${response.status}).`, {
        status: response.status,
        code: data?.error?.code,
      });
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
    if (message.setupComplete) {
      const retry = this.retry;
      this.retry = null;
      if (!retry) h.onSetupComplete?.();
      else h.onReconnected?.({ resumed: "resume" in retry.body, timeLimit: retry.granted.session_time_limit });
    }
    if (message.sessionResumable) this.resume = message.sessionResumable;
    if (message.serverContent) h.onServerContent?.(message.serverContent);
    if (message.toolCall) h.onToolCall?.(message.toolCall);
    if (message.toolCallCancellation) h.onToolCallCancellation?.(message.toolCallCancellation);
    // The server's own tools: shown, never answered.
    if (message.serverToolCall) h.onServerToolCall?.(message.serverToolCall);
    if (message.serverToolResult) h.onServerToolResult?.(message.serverToolResult);
    if (message.usageMetadata) h.onUsage?.(message.usageMetadata);
    if (message.usageWarning) h.onUsageWarning?.(message.usageWarning);
    if (message.sessionStatus) h.onSessionStatus?.(message.sessionStatus);
    if (message.sessionEnd) this.final = message;
    if (message.error) {
      // bad_message is the one error the session survives; every other error is its last word.
      if (message.error.code === "bad_message") h.onNotice?.(message.error);
      else this.final = message;
    }
  }

  #closed(event) {
    this.ws = null;
    const ending = {
      code: event.code,
      reason: event.reason,
      final: this.final,
      local: this.closedByUs && !this.final,
    };
    const survivable =
      !ending.local &&
      RESUMABLE_CLOSES.has(ending.code) &&
      (!this.final || this.final.sessionEnd?.reason === "shutdown") &&
      (this.retry || this.resume);
    if (survivable) this.#reconnect(ending);
    else this.#end(ending);
  }

  /** Continue the conversation on a new socket; that socket's close comes back to #closed. */
  async #reconnect(ending) {
    if (!this.retry) {
      const { token, expiresIn } = this.resume;
      this.resume = null; // single use
      this.retry = { body: { resume: token }, deadline: Date.now() + expiresIn * 1000, attempt: 0 };
      this.handlers.onReconnecting?.({ ...ending, text: describeEnding(ending) });
    }
    const retry = this.retry;
    for (;;) {
      const delay = RETRY_DELAYS[retry.attempt++];
      if (delay === undefined || Date.now() + delay * 1000 > retry.deadline) {
        this.#giveUp(ending, retry.error?.message ?? "no time left.");
        return;
      }
      await new Promise((resolve) => {
        this.#wake = resolve;
        setTimeout(resolve, delay * 1000);
      });
      if (this.retry !== retry) return; // closed meanwhile (close())
      try {
        // Kept from an attempt whose socket failed: a draining server's refused upgrade leaves
        // the token unspent.
        retry.granted ??= await this.#auth(retry.body);
      } catch (error) {
        retry.error = error;
      }
      if (this.retry !== retry) return;
      if (retry.granted) {
        this.#open(retry.granted.session_token);
        return;
      }
      if (retry.error.code === "resume_not_found") {
        // The server no longer has the conversation: a new session, same settings, new budget.
        Object.assign(retry, { body: this.newSession, deadline: Infinity, attempt: 0 });
      } else if (!RETRY_STATUSES.has(retry.error.status)) {
        this.#giveUp(ending, retry.error.message); // another attempt would get the same answer
        return;
      }
    }
  }

  #giveUp(ending, why) {
    this.#end(ending, `${describeEnding(ending)} Reconnecting failed: ${why}`);
  }

  #end(ending, text = describeEnding(ending)) {
    this.retry = null;
    this.resume = null;
    this.handlers.onEnd?.({ ...ending, text });
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

  /** End the session from this side (close 1000), also while it is reconnecting. */
  close() {
    this.closedByUs = true;
    if (this.ws) {
      this.ws.close(1000, "client disconnected");
    } else if (this.retry) {
      this.#wake?.();
      this.#end({ local: true });
    }
  }
}
