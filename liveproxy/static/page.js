// The UI both demo pages share (index.html through app.js, sdk.html through sdk.js): their
// common elements, status line, transcript, tool log, counters, model picker, buttons and the
// microphone and player wiring. No protocol here: each page's own file talks to its session.

import { AudioIO } from "./audio.js";
import { answerToolCall } from "./tools.js";

export const $ = (id) => document.getElementById(id);

export const LIVE_STATUS = "Live: speak, or type a message.";

export class DemoPage {
  /**
   * @param {object} options
   *   stats: the counters, each shown in the element of its id in statIds;
   *   session: sendAudio(ArrayBuffer), sendText(string) and endAudio(), called only while live;
   *   onOutputs(outputs): what else the page offers for the chosen model's outputs.
   */
  constructor({ stats, statIds, session, onOutputs = () => {} }) {
    this.ui = {
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
    this.stats = stats;
    this.statIds = statIds;
    this.session = session;
    this.onOutputs = onOutputs;
    this.models = []; // /api/status's: [{name, default, outputs, thinkingLevels, interactionStatus}]
    this.live = false; // set up, socket open, not reconnecting
    this.muted = false;
    this.turn = { user: null, model: null }; // transcript entries still being written
    this.audio = new AudioIO({
      onMicFrame: (pcm) => {
        if (!this.live || this.muted) return;
        this.session.sendAudio(pcm);
        this.count("framesSent");
      },
      onMicLevel: (level) => (this.ui.micLevel.value = this.muted ? 0 : Math.min(1, level * 4)),
      onPlayerStats: ({ played, level }) => {
        this.ui.outLevel.value = Math.min(1, level * 4);
        this.stats.samplesPlayed = played;
        this.showStat("samplesPlayed");
      },
    });
    this.#wireControls();
  }

  // --- counters and status ------------------------------------------------------------------

  count(name, amount = 1) {
    this.stats[name] += amount;
    this.showStat(name);
  }

  showStat(name) {
    $(this.statIds[name]).textContent = String(this.stats[name]);
  }

  setStatus(state, text) {
    this.ui.status.dataset.state = state;
    this.ui.status.textContent = text;
  }

  showNotice(text) {
    this.ui.notice.textContent = text;
    this.ui.notice.hidden = !text;
  }

  showEnding(text, code) {
    this.ui.ending.textContent = text;
    if (code) this.ui.ending.dataset.closeCode = String(code);
    this.ui.ending.hidden = false;
  }

  // --- model picker ---------------------------------------------------------------------------

  /** The chosen model's entry in /api/status (undefined before the server answered). */
  chosenModel() {
    return this.models.find((model) => model.name === this.ui.model.value);
  }

  /** Offer only the answers the chosen model gives (a model the server does not know, outputs
   * null, may give either): the setup never asks for one it would refuse. */
  applyModel() {
    const { form } = this.ui;
    const outputs = this.chosenModel()?.outputs ?? ["AUDIO", "TEXT"];
    const radios = [...form.elements.modality];
    for (const radio of radios) radio.disabled = !outputs.includes(radio.value);
    if (!outputs.includes(form.elements.modality.value)) {
      radios.find((radio) => !radio.disabled).checked = true;
    }
    this.onOutputs(outputs);
  }

  /** The model picker: the server's model (selected) and ALLOWED_MODELS; hidden when there is
   * no choice. */
  showModels(list) {
    const { model } = this.ui;
    this.models = list;
    const label = (m) => (m.default ? `${m.name} (default)` : m.name);
    model.replaceChildren(...list.map((m) => new Option(label(m), m.name, m.default, m.default)));
    model.hidden = model.labels[0].hidden = list.length < 2;
    this.applyModel();
  }

  // --- the session's course -------------------------------------------------------------------

  /** The Connect click: wake the audio (still inside the click, for autoplay rules), lock the
   * settings and clear what the last session left. */
  begin() {
    this.audio.prepare();
    this.setConnected(true);
    const { ending } = this.ui;
    ending.hidden = true;
    ending.textContent = "";
    delete ending.dataset.closeCode;
    this.showNotice("");
    this.ui.transcript.replaceChildren();
    this.ui.toolLog.replaceChildren();
    this.turn.user = this.turn.model = null;
    this.setStatus("connecting", "Connecting…");
  }

  /** Set up: typing, sending and muting allowed, then the microphone asked for (its failure is
   * a notice: typed turns still work); stopped again if `over()` by then. */
  async goLive(over = () => !this.live) {
    this.setStatus("live", LIVE_STATUS);
    this.setLive(true);
    this.ui.textInput.focus();
    try {
      await this.audio.startMic();
      if (over()) this.audio.stopMic(); // the session ended while the browser asked for the mic
    } catch (error) {
      this.showNotice(error.message);
      this.ui.mute.disabled = true;
    }
  }

  /** The socket ended but the conversation survives it: the microphone (not asked for again)
   * and the player keep running, the mic's frames dropped until the new socket is live. */
  reconnecting(text) {
    this.setLive(false);
    this.finishTurn();
    this.setStatus("reconnecting", text);
  }

  reconnected(note) {
    this.setLive(true);
    this.setStatus("live", LIVE_STATUS);
    this.addNote(note);
  }

  /** No session (any more): the microphone stopped, the settings back, `text` said. */
  ended(text, code) {
    this.setLive(false);
    this.setMuted(false);
    this.audio.stopMic();
    this.finishTurn();
    this.notConnected(text, code);
  }

  /** No session was started (`text` says why): the settings back for another try. */
  notConnected(text, code) {
    this.setConnected(false);
    this.setStatus("ended", "Not connected.");
    this.showEnding(text, code);
  }

  setConnected(connected) {
    this.ui.connect.disabled = connected;
    this.ui.disconnect.disabled = !connected;
    for (const element of this.ui.form.elements) element.disabled = connected;
    if (!connected) this.applyModel();
  }

  setLive(on) {
    this.live = on;
    this.ui.textInput.disabled = !on;
    this.ui.send.disabled = !on;
    this.ui.mute.disabled = !on;
  }

  setMuted(on) {
    this.muted = on;
    this.ui.mute.setAttribute("aria-pressed", String(on)); // a toggle: the label stays, the state changes
    if (on) this.ui.micLevel.value = 0;
  }

  // --- transcript -----------------------------------------------------------------------------

  /** Append a fragment to the open entry of `speaker` ("user" or "model"), opening one if needed. */
  appendText(speaker, text) {
    if (!text) return;
    const { turn } = this;
    if (!turn[speaker]) turn[speaker] = this.addEntry(speaker);
    turn[speaker].querySelector(".text").textContent += text;
    turn[speaker].scrollIntoView({ block: "nearest" });
  }

  addEntry(speaker, text = "") {
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
    this.ui.transcript.append(li);
    return li;
  }

  /** A line about the session itself (not said by anyone), between the turns. */
  addNote(text) {
    const li = document.createElement("li");
    li.className = "note";
    li.textContent = text;
    this.ui.transcript.append(li);
    li.scrollIntoView({ block: "nearest" });
  }

  /** turnComplete: the open entries are final; the next fragments start new ones. */
  finishTurn() {
    for (const speaker of ["user", "model"]) {
      if (this.turn[speaker]) this.turn[speaker].dataset.final = "true";
      this.turn[speaker] = null;
    }
  }

  /** The model was interrupted: stop talking over the user at once, and mark its entry. */
  interrupted() {
    this.audio.flush();
    if (this.turn.model) this.turn.model.dataset.interrupted = "true";
  }

  // --- tools ----------------------------------------------------------------------------------

  /** Answer the model's function calls (tools.js), logged; the responses to send back. */
  answerToolCalls(functionCalls = []) {
    return functionCalls.map((call) => {
      const response = answerToolCall(call);
      this.logTool(`${call.name}(${JSON.stringify(call.args ?? {})}) → ${JSON.stringify(response)}`, "answered");
      return { id: call.id, name: call.name, response };
    });
  }

  logTool(text, kind) {
    const li = document.createElement("li");
    li.dataset.kind = kind;
    const time = document.createElement("time");
    time.textContent = new Date().toLocaleTimeString();
    li.append(time, ` ${text}`);
    this.ui.toolLog.append(li);
  }

  // --- controls -------------------------------------------------------------------------------

  /** The mute toggle, the typed turn and the model picker (Connect and Disconnect are the
   * page's). */
  #wireControls() {
    const { ui } = this;
    ui.mute.addEventListener("click", () => {
      this.setMuted(!this.muted);
      if (this.muted) this.session.endAudio(); // lets the model answer what it heard so far
    });
    ui.textForm.addEventListener("submit", (event) => {
      event.preventDefault();
      const text = ui.textInput.value.trim();
      if (!text || !this.live) return;
      this.finishTurn();
      const entry = this.addEntry("user", text);
      entry.dataset.typed = "true";
      entry.dataset.final = "true";
      this.session.sendText(text);
      ui.textInput.value = "";
    });
    ui.model.addEventListener("change", () => this.applyModel());
  }
}
