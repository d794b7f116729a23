// The demo's SDK page wiring: settings -> the SDK's LiveConnectConfig, Gemini's messages ->
// transcript, tool log, audio, status. The connection lives in sdk-session.js, the audio in
// audio.js (the same worklets as the main demo); this file is only UI.

import { AudioIO } from "./audio.js";
import { fromBase64, SdkSession, SERVER } from "./sdk-session.js";
import { answerToolCall } from "./tools.js";

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
  transcript: $("transcript"),
  textForm: $("text-form"),
  textInput: $("text-input"),
  send: $("send"),
  toolLog: $("tool-log"),
  micLevel: $("mic-level"),
  outLevel: $("out-level"),
};

// Counters shown under "Diagnostics", also readable as window.liveproxySdk.stats.
const stats = { framesSent: 0, chunksReceived: 0, bytesReceived: 0, samplesPlayed: 0, reconnects: 0 };
const STAT_IDS = {
  framesSent: "frames-sent",
  chunksReceived: "chunks-received",
  bytesReceived: "bytes-received",
  samplesPlayed: "samples-played",
  reconnects: "reconnects",
};
window.liveproxySdk = { stats };

const LIVE_STATUS = "Live: speak, or type a message.";

/** The page's function, declared as the SDK takes it (camelCase; answered by tools.js). */
const TOOLS = [
  {
    functionDeclarations: [
      {
        name: "get_weather",
        description: "Get the current weather for a city.",
        parameters: {
          type: "OBJECT",
          properties: { location: { type: "STRING", description: "City name, e.g. Tokyo" } },
          required: ["location"],
        },
      },
    ],
  },
];

let models = []; // /api/status's: [{name, default, outputs, ...}]
let botCheck = null; // /api/status's botCheck, or null
let session = null;
let live = false; // connected and set up, not reconnecting
let muted = false;
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

function showEnding(text, code) {
  ui.ending.textContent = text;
  if (code) ui.ending.dataset.closeCode = String(code);
  ui.ending.hidden = false;
}

function chosenModel() {
  return models.find((model) => model.name === ui.model.value);
}

/** Offer only the answers the chosen model gives. */
function applyModel() {
  const outputs = chosenModel()?.outputs ?? ["AUDIO", "TEXT"];
  const radios = [...ui.form.elements.modality];
  for (const radio of radios) radio.disabled = !outputs.includes(radio.value);
  if (!outputs.includes(ui.form.elements.modality.value)) {
    radios.find((radio) => !radio.disabled).checked = true;
  }
}

/** The SDK's LiveConnectConfig, from the settings form (sdk-session.js adds sessionResumption). */
function buildConfig() {
  const modality = ui.form.elements.modality.value;
  const config = { responseModalities: [modality], tools: TOOLS, inputAudioTranscription: {} };
  if (modality === "AUDIO") config.outputAudioTranscription = {};
  const prompt = $("system-prompt").value.trim();
  if (prompt) config.systemInstruction = prompt;
  return config;
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
    showEnding(botCheckMessage(botCheck));
    return;
  }
  audio.prepare(); // first, while still inside the click (autoplay rules)
  setConnected(true);
  ui.ending.hidden = true;
  delete ui.ending.dataset.closeCode;
  showNotice("");
  ui.transcript.replaceChildren();
  ui.toolLog.replaceChildren();
  turn.user = turn.model = null;
  $("handle").textContent = "–"; // the last conversation's is no use to this one
  setStatus("connecting", "Connecting…");
  const model = chosenModel()?.name ?? "gemini-live";
  session = new SdkSession(sessionHandlers());
  try {
    await audio.startPlayer();
  } catch (error) {
    showNotice(`The model's voice cannot be played here (${error.message}); transcripts still work.`);
  }
  try {
    await session.start({ model, config: buildConfig() });
  } catch (error) {
    session = null;
    setConnected(false);
    setStatus("ended", "Not connected.");
    showEnding(error.message);
    return;
  }
  if (!session) return; // it ended as soon as it was set up (onEnd said why)
  setStatus("live", LIVE_STATUS);
  setLive(true);
  ui.textInput.focus();
  try {
    await audio.startMic();
    if (!session) audio.stopMic(); // the session ended while the browser asked for the mic
  } catch (error) {
    showNotice(error.message);
    ui.mute.disabled = true;
  }
}

function sessionHandlers() {
  return {
    onMessage: showMessage,
    // The socket dropped but the conversation survives it: the microphone and the player keep
    // running, the mic's frames dropped until the new socket is live.
    onReconnecting({ attempt }) {
      setLive(false);
      finishTurn();
      setStatus("reconnecting", `Reconnecting (attempt ${attempt})…`);
    },
    onReconnected() {
      count("reconnects");
      setLive(true);
      setStatus("live", LIVE_STATUS);
      addNote("reconnected with the latest resumption handle");
    },
    onEnd(ending) {
      setLive(false);
      setMuted(false);
      audio.stopMic();
      finishTurn();
      session = null;
      setConnected(false);
      setStatus("ended", "Not connected.");
      showEnding(ending.text, ending.code);
    },
  };
}

/** One LiveServerMessage from the SDK. */
function showMessage(message) {
  const content = message.serverContent;
  if (content) {
    for (const part of content.modelTurn?.parts ?? []) {
      const data = part.inlineData?.data;
      if (data && part.inlineData.mimeType?.startsWith("audio/pcm")) {
        const buffer = fromBase64(data);
        count("chunksReceived");
        count("bytesReceived", buffer.byteLength);
        audio.play(buffer);
      } else if (part.text && !part.thought) {
        appendText("model", part.text);
      }
    }
    if (content.inputTranscription) appendText("user", content.inputTranscription.text);
    if (content.outputTranscription) appendText("model", content.outputTranscription.text);
    if (content.interrupted) {
      audio.flush(); // stop talking over the user at once
      if (turn.model) turn.model.dataset.interrupted = "true";
    }
    if (content.turnComplete) finishTurn();
  }
  if (message.toolCall) answerTools(message.toolCall);
  for (const id of message.toolCallCancellation?.ids ?? []) {
    logTool(`Call ${id} was cancelled by the model.`, "cancelled");
  }
  if (message.sessionResumptionUpdate?.newHandle) {
    $("handle").textContent = `${message.sessionResumptionUpdate.newHandle.slice(0, 12)}…`;
  }
  if (message.goAway) showNotice(`The server will close this connection in ${message.goAway.timeLeft}.`);
}

function answerTools({ functionCalls = [] }) {
  const responses = functionCalls.map((call) => {
    const response = answerToolCall(call);
    logTool(`${call.name}(${JSON.stringify(call.args ?? {})}) → ${JSON.stringify(response)}`, "answered");
    return { id: call.id, name: call.name, response };
  });
  if (responses.length) session?.answerTools(responses);
}

// --- transcript -----------------------------------------------------------------------------

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

function addNote(text) {
  const li = document.createElement("li");
  li.className = "note";
  li.textContent = text;
  ui.transcript.append(li);
}

function finishTurn() {
  for (const speaker of ["user", "model"]) {
    if (turn[speaker]) turn[speaker].dataset.final = "true";
    turn[speaker] = null;
  }
}

function logTool(text, kind) {
  const li = document.createElement("li");
  li.dataset.kind = kind;
  const time = document.createElement("time");
  time.textContent = new Date().toLocaleTimeString();
  li.append(time, ` ${text}`);
  ui.toolLog.append(li);
}

// --- controls -------------------------------------------------------------------------------

function setMuted(on) {
  muted = on;
  ui.mute.setAttribute("aria-pressed", String(on));
  if (on) ui.micLevel.value = 0;
}

ui.connect.addEventListener("click", connect);
ui.disconnect.addEventListener("click", () => session?.close());
ui.mute.addEventListener("click", () => {
  setMuted(!muted);
  if (muted) session?.endAudio();
});
ui.model.addEventListener("change", applyModel);

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

function botCheckMessage(check) {
  return (
    `This server requires a bot check (${check.provider}) at sign-in. This demo page cannot ` +
    "pass it. Use your own app, or run the server without BOT_CHECK to try this page."
  );
}

async function showMode() {
  try {
    const status = await fetch(new URL("api/status", SERVER)).then((r) => r.json());
    models = status.models ?? [];
    const label = (m) => (m.default ? `${m.name} (default)` : m.name);
    ui.model.replaceChildren(...models.map((m) => new Option(label(m), m.name, m.default, m.default)));
    ui.model.hidden = ui.model.labels[0].hidden = models.length < 2;
    applyModel();
    botCheck = status.botCheck ?? null;
    if (botCheck) showNotice(botCheckMessage(botCheck));
    $("mode").textContent = `Server: ${SERVER.origin} (${status.mode}).`;
  } catch {
    $("mode").textContent = "The server did not answer; is it running?";
  }
}

showMode();
