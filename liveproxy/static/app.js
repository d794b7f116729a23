// The demo page's wiring: settings -> setup, session events -> transcript, tool log, status.
// The protocol lives in session.js, the audio in audio.js and the UI it shares with the SDK
// page in page.js; this file is only this page's UI.

import { $, DemoPage, LIVE_STATUS } from "./page.js";
import { LiveSession, SERVER } from "./session.js";
import { TOOLS } from "./tools.js";

let session = null;
let timer = null;
let botCheck = null; // /api/status's botCheck: {provider, siteKey}, or null

// Counters shown under "Diagnostics", also readable as window.liveproxyDemo.stats.
const page = new DemoPage({
  stats: { framesSent: 0, framesReceived: 0, bytesReceived: 0, samplesPlayed: 0, tokens: 0 },
  statIds: {
    framesSent: "frames-sent",
    framesReceived: "frames-received",
    bytesReceived: "bytes-received",
    samplesPlayed: "samples-played",
    tokens: "tokens",
  },
  session: {
    sendAudio: (pcm) => session.sendAudio(pcm),
    sendText: (text) => session.sendText(text),
    endAudio: () => session?.sendAudioStreamEnd(),
  },
  onOutputs(outputs) {
    const speaks = outputs.includes("AUDIO");
    $("voice").disabled = !speaks;
    $("output-transcription").disabled = !speaks;
  },
});
window.liveproxyDemo = { stats: page.stats };
const { ui, audio } = page;
const timerShown = $("timer");

/** What the page says when the server requires a bot check it cannot pass. */
function botCheckMessage(check) {
  return (
    `This server requires a bot check (${check.provider}) at sign-in. This demo page cannot ` +
    "pass it: the provider's script must load from the internet, on a site its key allows. " +
    "Use your own app, or run the server without BOT_CHECK to try this page."
  );
}

/** The setup message, from the settings form (snake_case, as the proxy accepts it). */
function buildSetup() {
  const modality = ui.form.elements.modality.value;
  const setup = {
    generation_config: { response_modalities: [modality] },
    tools: TOOLS,
  };
  const model = page.chosenModel();
  if (model && !model.default) setup.model = model.name; // the server's own needs no naming
  if (modality === "AUDIO") {
    setup.generation_config.speech_config = {
      voice_config: { prebuilt_voice_config: { voice_name: $("voice").value } },
    };
    if ($("output-transcription").checked) setup.output_audio_transcription = {};
  }
  if ($("input-transcription").checked) setup.input_audio_transcription = {};
  const prompt = $("system-prompt").value.trim();
  if (prompt) setup.system_instruction = { parts: [{ text: prompt }] };
  return setup;
}

async function connect() {
  if (botCheck) {
    // The server would answer 400 bot_check_required: say why instead.
    page.showEnding(botCheckMessage(botCheck));
    return;
  }
  page.begin();
  session = new LiveSession(sessionHandlers());
  const length = Number.parseInt($("session-length").value, 10);
  try {
    const limit = await session.start({
      setup: buildSetup(),
      sessionDuration: Number.isNaN(length) ? undefined : length,
    });
    startTimer(limit);
  } catch (error) {
    // No socket was opened (the auth request failed): say why and let the user try again.
    session = null;
    page.notConnected(error.message);
    return;
  }
  try {
    await audio.startPlayer();
    $("context-rate").textContent = `${audio.context.sampleRate} Hz`;
  } catch (error) {
    page.showNotice(`The model's voice cannot be played here (${error.message}); transcripts still work.`);
  }
}

function sessionHandlers() {
  return {
    onOpen: () => page.setStatus("open", "Connected; waiting for the model…"),
    onSetupComplete: () => page.goLive(),
    onAudio(buffer) {
      page.count("framesReceived");
      page.count("bytesReceived", buffer.byteLength);
      audio.play(buffer);
    },
    onServerContent: showServerContent,
    onToolCall({ functionCalls }) {
      const responses = page.answerToolCalls(functionCalls);
      if (responses.length) session?.sendToolResponse(responses);
    },
    onToolCallCancellation({ ids = [] }) {
      for (const id of ids) page.logTool(`Call ${id} was cancelled by the model.`, "cancelled");
    },
    onServerToolCall({ name, args }) {
      page.logTool(`${name}(${args ? JSON.stringify(args) : "…"}) running on the server…`, "server-running");
    },
    onServerToolResult({ name, response, error, seconds }) {
      const outcome = error ? `failed: ${error.message}` : `→ ${response ? JSON.stringify(response) : "done"}`;
      page.logTool(`${name} on the server ${outcome} (${seconds} s)`, error ? "server-failed" : "server-done");
    },
    onUsage(usage) {
      if (usage.totalTokenCount) {
        page.stats.tokens = usage.totalTokenCount;
        page.showStat("tokens");
      }
    },
    onUsageWarning({ remaining = {} }) {
      const left = Object.entries(remaining).map(([what, amount]) => `${amount} ${what.replace("/", " this ")}`);
      page.showNotice(`Almost out of budget: ${left.join(", ")} left.`);
    },
    onSessionStatus({ state }) {
      if (state === "reconnecting") page.showNotice("The connection to the model dropped; reconnecting…");
      else if (state === "resumed") page.showNotice("Reconnected to the model; the conversation goes on.");
    },
    onNotice: (error) => page.showNotice(`The server did not accept a message: ${error.message}`),
    onReconnecting(ending) {
      page.reconnecting("Reconnecting…");
      page.showNotice(ending.text);
    },
    onReconnected({ resumed, timeLimit }) {
      startTimer(timeLimit);
      page.showNotice("");
      page.reconnected(resumed ? "reconnected — conversation kept" : "new session — the conversation could not be kept");
    },
    onEnd(ending) {
      stopTimer();
      timerShown.textContent = "–";
      session = null;
      page.ended(ending.text, ending.code);
      const final = ending.final?.sessionEnd ?? ending.final?.error;
      if (final?.stats?.usage) showSessionUsage(final.stats.usage);
      showBudget();
    },
  };
}

/** What the session used, from its sessionEnd (or error) stats. */
function showSessionUsage(usage) {
  const parts = [`${usage.total_tokens} tokens`];
  if (usage.audio_in_seconds) parts.push(`${usage.audio_in_seconds} s of audio in`);
  if (usage.audio_out_seconds) parts.push(`${usage.audio_out_seconds} s out`);
  if (usage.cost_usd !== undefined) parts.push(`$${usage.cost_usd}`);
  $("session-usage").textContent = parts.join(", ");
}

/** The server's budgets for this client (GET api/usage): "57.5 of 60 minutes this day left". */
async function showBudget() {
  try {
    const response = await fetch(new URL("api/usage", SERVER));
    if (!response.ok) return;
    const { budgets = [] } = await response.json();
    const text = budgets.map(
      (b) => `${b.remaining} of ${b.limit} ${b.unit} this ${b.period}${b.scope === "total" ? " (everyone)" : ""}`,
    );
    $("budget").textContent = text.length ? `${text.join("; ")} left` : "No budget set";
  } catch {
    // The budget is extra information: the page works without it.
  }
}

function showServerContent(content) {
  if (content.inputTranscription) page.appendText("user", content.inputTranscription.text);
  if (content.outputTranscription) page.appendText("model", content.outputTranscription.text);
  for (const part of content.modelTurn?.parts ?? []) {
    if (part.text && !part.thought) page.appendText("model", part.text);
  }
  if (content.interrupted) page.interrupted();
  if (content.turnComplete) page.finishTurn();
  // A model that reports it may go on after turnComplete: the interaction ends at IDLE.
  if (content.interactionStatus && page.live) {
    if (content.interactionStatus === "IDLE") page.setStatus("live", LIVE_STATUS);
    else page.setStatus("thinking", "Live: thinking…");
  }
}

// --- timer ----------------------------------------------------------------------------------

function startTimer(seconds) {
  const deadline = performance.now() + seconds * 1000;
  const tick = () => {
    const left = Math.max(0, Math.ceil((deadline - performance.now()) / 1000));
    timerShown.dataset.secondsLeft = String(left);
    timerShown.textContent = `${Math.floor(left / 60)}:${String(left % 60).padStart(2, "0")}`;
  };
  stopTimer();
  tick();
  timer = setInterval(tick, 250);
}

function stopTimer() {
  clearInterval(timer);
  timer = null;
}

// --- controls -------------------------------------------------------------------------------

ui.connect.addEventListener("click", connect);
ui.disconnect.addEventListener("click", () => session?.close());

// Which upstream the server uses, so nobody wonders why the "model" echoes them.
async function showMode() {
  try {
    const [status, health] = await Promise.all(
      ["api/status", "api/health"].map((path) => fetch(new URL(path, SERVER)).then((r) => r.json())),
    );
    const model = health.model ? ` (${health.model})` : "";
    ui.form.dataset.mode = status.mode;
    page.showModels(status.models ?? []);
    botCheck = status.botCheck ?? null;
    if (botCheck) page.showNotice(botCheckMessage(botCheck));
    $("mode").textContent = {
      emulator: "Using the built-in Gemini Live emulator: it answers by playing your speech back.",
      advanced: `Talking to Gemini${model} through this server; the API key stays on the server.`,
      simple: `No model configured: set ${status.missing.join(", ")} on the server.`,
    }[status.mode] ?? `Server mode: ${status.mode}.`;
  } catch {
    $("mode").textContent = "The server did not answer; is it running?";
  }
}

showMode();
showBudget();
