// The demo's SDK page wiring: settings -> the SDK's LiveConnectConfig, Gemini's messages ->
// transcript, tool log, audio, status. The connection lives in sdk-session.js, the audio in
// audio.js (the same worklets as the main demo) and the UI it shares with the main page in
// page.js; this file is only this page's UI.

import { $, DemoPage } from "./page.js";
import { fromBase64, SdkSession, SERVER } from "./sdk-session.js";

let session = null;
let botCheck = null; // /api/status's botCheck, or null

// Counters shown under "Diagnostics", also readable as window.liveproxySdk.stats.
const page = new DemoPage({
  stats: { framesSent: 0, chunksReceived: 0, bytesReceived: 0, samplesPlayed: 0, reconnects: 0 },
  statIds: {
    framesSent: "frames-sent",
    chunksReceived: "chunks-received",
    bytesReceived: "bytes-received",
    samplesPlayed: "samples-played",
    reconnects: "reconnects",
  },
  session: {
    sendAudio: (pcm) => session.sendAudio(pcm),
    sendText: (text) => session.sendText(text),
    endAudio: () => session?.endAudio(),
  },
});
window.liveproxySdk = { stats: page.stats };
const { ui, audio } = page;

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

/** The SDK's LiveConnectConfig, from the settings form (sdk-session.js adds sessionResumption). */
function buildConfig() {
  const modality = ui.form.elements.modality.value;
  const config = { responseModalities: [modality], tools: TOOLS, inputAudioTranscription: {} };
  if (modality === "AUDIO") config.outputAudioTranscription = {};
  const prompt = $("system-prompt").value.trim();
  if (prompt) config.systemInstruction = prompt;
  return config;
}

async function connect() {
  if (botCheck) {
    page.showEnding(botCheckMessage(botCheck));
    return;
  }
  page.begin();
  $("handle").textContent = "–"; // the last conversation's is no use to this one
  const model = page.chosenModel()?.name ?? "gemini-live";
  session = new SdkSession(sessionHandlers());
  try {
    await audio.startPlayer();
  } catch (error) {
    page.showNotice(`The model's voice cannot be played here (${error.message}); transcripts still work.`);
  }
  try {
    await session.start({ model, config: buildConfig() });
  } catch (error) {
    session = null;
    page.notConnected(error.message);
    return;
  }
  if (!session) return; // it ended as soon as it was set up (onEnd said why)
  await page.goLive(() => !session);
}

function sessionHandlers() {
  return {
    onMessage: showMessage,
    onReconnecting({ attempt }) {
      page.reconnecting(`Reconnecting (attempt ${attempt})…`);
    },
    onReconnected() {
      page.count("reconnects");
      page.reconnected("reconnected with the latest resumption handle");
    },
    onEnd(ending) {
      session = null;
      page.ended(ending.text, ending.code);
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
        page.count("chunksReceived");
        page.count("bytesReceived", buffer.byteLength);
        audio.play(buffer);
      } else if (part.text && !part.thought) {
        page.appendText("model", part.text);
      }
    }
    if (content.inputTranscription) page.appendText("user", content.inputTranscription.text);
    if (content.outputTranscription) page.appendText("model", content.outputTranscription.text);
    if (content.interrupted) page.interrupted();
    if (content.turnComplete) page.finishTurn();
  }
  if (message.toolCall) {
    const responses = page.answerToolCalls(message.toolCall.functionCalls);
    if (responses.length) session?.answerTools(responses);
  }
  for (const id of message.toolCallCancellation?.ids ?? []) {
    page.logTool(`Call ${id} was cancelled by the model.`, "cancelled");
  }
  if (message.sessionResumptionUpdate?.newHandle) {
    $("handle").textContent = `${message.sessionResumptionUpdate.newHandle.slice(0, 12)}…`;
  }
  if (message.goAway) page.showNotice(`The server will close this connection in ${message.goAway.timeLeft}.`);
}

// --- controls -------------------------------------------------------------------------------

ui.connect.addEventListener("click", connect);
ui.disconnect.addEventListener("click", () => session?.close());

function botCheckMessage(check) {
  return (
    `This server requires a bot check (${check.provider}) at sign-in. This demo page cannot ` +
    "pass it. Use your own app, or run the server without BOT_CHECK to try this page."
  );
}

async function showMode() {
  try {
    const status = await fetch(new URL("api/status", SERVER)).then((r) => r.json());
    page.showModels(status.models ?? []);
    botCheck = status.botCheck ?? null;
    if (botCheck) page.showNotice(botCheckMessage(botCheck));
    $("mode").textContent = `Server: ${SERVER.origin} (${status.mode}).`;
  } catch {
    $("mode").textContent = "The server did not answer; is it running?";
  }
}

showMode();
