// The demo page's wiring: settings -> setup, session events -> transcript, tool log, status.
// The protocol lives in session.js and the audio in audio.js; this file is only UI.

import { AudioIO } from "./audio.js";
import { LiveSession, SERVER } from "./session.js";
import { answerToolCall, TOOLS } from "./tools.js";

const $ = (id) => document.getElementById(id);
const ui = {
  form: $("settings"),
  model: $("model"),
  connect: $("connect"),
  disconnect: $("disconnect"),
  mute: $("mute"),
  status: $("status"),
  notice: $("notice"),
  ending: $("ending"),
  timer: $("timer"),
  transcript: $("transcript"),
  textForm: $("text-form"),
  textInput: $("text-input"),
  send: $("send"),
  toolLog: $("tool-log"),
  micLevel: $("mic-level"),
  budget: $("budget"),
  sessionUsage: $("session-usage"),
  outLevel: $("out-level"),
};

// Counters shown under "Diagnostics", also readable as window.liveproxyDemo.stats.
const stats = { framesSent: 0, framesReceived: 0, bytesReceived: 0, samplesPlayed: 0, tokens: 0 };
const STAT_IDS = {
  framesSent: "frames-sent",
  framesReceived: "frames-received",
  bytesReceived: "bytes-received",
  samplesPlayed: "samples-played",
  tokens: "tokens",
};
window.liveproxyDemo = { stats };

const LIVE_STATUS = "Live: speak, or type a message.";

let models = []; // /api/status's: [{name, default, outputs, thinkingLevels, interactionStatus}]
let botCheck = null; // /api/status's botCheck: {provider, siteKey}, or null

/** What the page says when the server requires a bot check it cannot pass. */
function botCheckMessage(check) {
  return (
    `This server requires a bot check (${check.provider}) at sign-in. This demo page cannot ` +
    "pass it: the provider's script must load from the internet, on a site its key allows. " +
    "Use your own app, or run the server without BOT_CHECK to try this page."
  );
}
let session = null;
let live = false; // setupComplete seen, socket still open
let muted = false;
let timer = null;
const turn = { user: null, model: null }; // transcript entries still being written

const audio = new AudioIO({
  onMicFrame(pcm) {
    if (!live || muted) return;
    session.sendAudio(pcm);
    count("framesSent");
  },
  onMicLevel: (level) => (ui.micLevel.value = muted ? 0 : Math.min(1, level * 4)),
  onPlayerStats({ played, level }) {
    ui.outLevel.value = Math.min(1, level * 4);
    stats.samplesPlayed = played;
    showStat("samplesPlayed");
  },
});

function count(name, amount = 1) {
  stats[name] += amount;
  showStat(name);
}

function showStat(name) {
  $(STAT_IDS[name]).textContent = String(stats[name]);
}

function setStatus(state, text) {
  ui.status.dataset.state = state;
  ui.status.textContent = text;
}

function showNotice(text) {
  ui.notice.textContent = text;
  ui.notice.hidden = !text;
}

/** The chosen model's entry in /api/status (undefined before the server answered). */
function chosenModel() {
  return models.find((model) => model.name === ui.model.value);
}

/** Offer only the answers the chosen model gives (a model the server does not know, outputs
 * null, may give either): the setup never asks for one it would refuse. */
function applyModel() {
  const outputs = chosenModel()?.outputs ?? ["AUDIO", "TEXT"];
  const radios = [...ui.form.elements.modality];
  for (const radio of radios) radio.disabled = !outputs.includes(radio.value);
  if (!outputs.includes(ui.form.elements.modality.value)) {
    radios.find((radio) => !radio.disabled).checked = true;
  }
  const speaks = outputs.includes("AUDIO");
  $("voice").disabled = !speaks;
  $("output-transcription").disabled = !speaks;
}

/** The setup message, from the settings form (snake_case, as the proxy accepts it). */
function buildSetup() {
  const modality = ui.form.elements.modality.value;
  const setup = {
    generation_config: { response_modalities: [modality] },
    tools: TOOLS,
  };
  const model = chosenModel();
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

function setConnected(connected) {
  ui.connect.disabled = connected;
  ui.disconnect.disabled = !connected;
  for (const element of ui.form.elements) element.disabled = connected;
  if (!connected) applyModel();
}

function setLive(on) {
  live = on;
  ui.textInput.disabled = !on;
  ui.send.disabled = !on;
  ui.mute.disabled = !on;
}

async function connect() {
  if (botCheck) {
    // The server would answer 400 bot_check_required: say why instead.
    showEnding(botCheckMessage(botCheck));
    return;
  }
  audio.prepare(); // first, while we are still inside the click (autoplay rules)
  setConnected(true);
  ui.ending.hidden = true;
  ui.ending.textContent = "";
  delete ui.ending.dataset.closeCode;
  showNotice("");
  ui.transcript.replaceChildren();
  ui.toolLog.replaceChildren();
  turn.user = turn.model = null;
  setStatus("connecting", "Connecting…");

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
    setConnected(false);
    setStatus("ended", "Not connected.");
    showEnding(error.message);
    return;
  }
  try {
    await audio.startPlayer();
    $("context-rate").textContent = `${audio.context.sampleRate} Hz`;
  } catch (error) {
    showNotice(`The model's voice cannot be played here (${error.message}); transcripts still work.`);
  }
}

function sessionHandlers() {
  return {
    onOpen: () => setStatus("open", "Connected; waiting for the model…"),
    async onSetupComplete() {
      setStatus("live", LIVE_STATUS);
      setLive(true);
      ui.textInput.focus();
      try {
        await audio.startMic();
        if (!live) audio.stopMic(); // the session ended while the browser asked for the mic
      } catch (error) {
        showNotice(error.message);
        ui.mute.disabled = true;
      }
    },
    onAudio(buffer) {
      count("framesReceived");
      count("bytesReceived", buffer.byteLength);
      audio.play(buffer);
    },
    onServerContent: showServerContent,
    onToolCall: handleToolCall,
    onToolCallCancellation({ ids = [] }) {
      for (const id of ids) logTool(`Call ${id} was cancelled by the model.`, "cancelled");
    },
    onServerToolCall({ name, args }) {
      logTool(`${name}(${args ? JSON.stringify(args) : "…"}) running on the server…`, "server-running");
    },
    onServerToolResult({ name, response, error, seconds }) {
      const outcome = error ? `failed: ${error.message}` : `→ ${response ? JSON.stringify(response) : "done"}`;
      logTool(`${name} on the server ${outcome} (${seconds} s)`, error ? "server-failed" : "server-done");
    },
    onUsage(usage) {
      if (usage.totalTokenCount) {
        stats.tokens = usage.totalTokenCount;
        showStat("tokens");
      }
    },
    onUsageWarning({ remaining = {} }) {
      const left = Object.entries(remaining).map(([what, amount]) => `${amount} ${what.replace("/", " this ")}`);
      showNotice(`Almost out of budget: ${left.join(", ")} left.`);
    },
    onSessionStatus({ state }) {
      if (state === "reconnecting") showNotice("The connection to the model dropped; reconnecting…");
      else if (state === "resumed") showNotice("Reconnected to the model; the conversation goes on.");
    },
    onNotice: (error) => showNotice(`The server did not accept a message: ${error.message}`),
    // The socket ended but the conversation survives it: the microphone (not asked for again)
    // and the player keep running, the mic's frames dropped until the new socket is live.
    onReconnecting(ending) {
      setLive(false);
      finishTurn();
      setStatus("reconnecting", "Reconnecting…");
      showNotice(ending.text);
    },
    onReconnected({ resumed, timeLimit }) {
      startTimer(timeLimit);
      setLive(true);
      setStatus("live", LIVE_STATUS);
      showNotice("");
      addNote(resumed ? "reconnected — conversation kept" : "new session — the conversation could not be kept");
    },
    onEnd(ending) {
      setLive(false);
      setMuted(false);
      stopTimer();
      ui.timer.textContent = "–";
      audio.stopMic();
      finishTurn();
      session = null;
      setConnected(false);
      setStatus("ended", "Not connected.");
      showEnding(ending.text, ending.code);
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
  ui.sessionUsage.textContent = parts.join(", ");
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
    ui.budget.textContent = text.length ? `${text.join("; ")} left` : "No budget set";
  } catch {
    // The budget is extra information: the page works without it.
  }
}

function showEnding(text, code) {
  ui.ending.textContent = text;
  if (code) ui.ending.dataset.closeCode = String(code);
  ui.ending.hidden = false;
}

// --- transcript -----------------------------------------------------------------------------

/** Append a fragment to the open entry of `speaker` ("user" or "model"), opening one if needed. */
function appendText(speaker, text) {
  if (!text) return;
  if (!turn[speaker]) turn[speaker] = addEntry(speaker);
  turn[speaker].querySelector(".text").textContent += text;
  turn[speaker].scrollIntoView({ block: "nearest" });
}

function addEntry(speaker, text = "") {
  const li = document.createElement("li");
  li.className = `entry ${speaker}`;
  li.dataset.speaker = speaker;
  li.dataset.final = "false";
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = speaker === "user" ? "You" : "Model";
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text;
  li.append(who, body);
  ui.transcript.append(li);
  return li;
}

/** A line about the session itself (not said by anyone), between the turns. */
function addNote(text) {
  const li = document.createElement("li");
  li.className = "note";
  li.textContent = text;
  ui.transcript.append(li);
  li.scrollIntoView({ block: "nearest" });
}

/** turnComplete: the open entries are final; the next fragments start new ones. */
function finishTurn() {
  for (const speaker of ["user", "model"]) {
    if (turn[speaker]) turn[speaker].dataset.final = "true";
    turn[speaker] = null;
  }
}

function showServerContent(content) {
  if (content.inputTranscription) appendText("user", content.inputTranscription.text);
  if (content.outputTranscription) appendText("model", content.outputTranscription.text);
  for (const part of content.modelTurn?.parts ?? []) {
    if (part.text && !part.thought) appendText("model", part.text);
  }
  if (content.interrupted) {
    audio.flush(); // stop talking over the user at once
    if (turn.model) turn.model.dataset.interrupted = "true";
  }
  if (content.turnComplete) finishTurn();
  // A model that reports it may go on after turnComplete: the interaction ends at IDLE.
  if (content.interactionStatus && live) {
    if (content.interactionStatus === "IDLE") setStatus("live", LIVE_STATUS);
    else setStatus("thinking", "Live: thinking…");
  }
}

// --- tools ----------------------------------------------------------------------------------

function handleToolCall({ functionCalls = [] }) {
  const responses = functionCalls.map((call) => {
    const response = answerToolCall(call);
    logTool(`${call.name}(${JSON.stringify(call.args ?? {})}) → ${JSON.stringify(response)}`, "answered");
    return { id: call.id, name: call.name, response };
  });
  if (responses.length) session?.sendToolResponse(responses);
}

function logTool(text, kind) {
  const li = document.createElement("li");
  li.dataset.kind = kind;
  const time = document.createElement("time");
  time.textContent = new Date().toLocaleTimeString();
  li.append(time, ` ${text}`);
  ui.toolLog.append(li);
}

// --- timer ----------------------------------------------------------------------------------

function startTimer(seconds) {
  const deadline = performance.now() + seconds * 1000;
  const tick = () => {
    const left = Math.max(0, Math.ceil((deadline - performance.now()) / 1000));
    ui.timer.dataset.secondsLeft = String(left);
    ui.timer.textContent = `${Math.floor(left / 60)}:${String(left % 60).padStart(2, "0")}`;
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

function setMuted(on) {
  muted = on;
  ui.mute.setAttribute("aria-pressed", String(on)); // a toggle: the label stays, the state changes
  if (on) ui.micLevel.value = 0;
}

ui.mute.addEventListener("click", () => {
  setMuted(!muted);
  if (muted) session?.sendAudioStreamEnd(); // lets the model answer what it heard so far
});

ui.textForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = ui.textInput.value.trim();
  if (!text || !live) return;
  finishTurn();
  const entry = addEntry("user", text);
  entry.dataset.typed = "true";
  entry.dataset.final = "true";
  session.sendText(text);
  ui.textInput.value = "";
});

// Which upstream the server uses, so nobody wonders why the "model" echoes them.
async function showMode() {
  try {
    const [status, health] = await Promise.all(
      ["api/status", "api/health"].map((path) => fetch(new URL(path, SERVER)).then((r) => r.json())),
    );
    const model = health.model ? ` (${health.model})` : "";
    ui.form.dataset.mode = status.mode;
    showModels(status.models ?? []);
    botCheck = status.botCheck ?? null;
    if (botCheck) showNotice(botCheckMessage(botCheck));
    $("mode").textContent = {
      emulator: "Using the built-in Gemini Live emulator: it answers by playing your speech back.",
      advanced: `Talking to Gemini${model} through this server; the API key stays on the server.`,
      simple: `No model configured: set ${status.missing.join(", ")} on the server.`,
    }[status.mode] ?? `Server mode: ${status.mode}.`;
  } catch {
    $("mode").textContent = "The server did not answer; is it running?";
  }
}

/** The model picker: the server's model (selected) and ALLOWED_MODELS; hidden when there is
 * no choice. */
function showModels(list) {
  models = list;
  const label = (m) => (m.default ? `${m.name} (default)` : m.name);
  ui.model.replaceChildren(...models.map((m) => new Option(label(m), m.name, m.default, m.default)));
  ui.model.hidden = ui.model.labels[0].hidden = models.length < 2;
  applyModel();
}

ui.model.addEventListener("change", applyModel);
showMode();
showBudget();
