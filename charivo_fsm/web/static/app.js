// The charivo-fsm voice page.  Protocol: docs/web.md (WebSocket /session).
//
// * microphone: getUserMedia -> AudioWorklet (capture-worklet.js) -> PCM16 mono
//   24 kHz chunks -> binary WebSocket messages, while a session is active (and,
//   in push-to-talk mode, while the talk button is held);
// * the model's voice: `realtime:audio:delta` events (base64 PCM16 24 kHz) ->
//   AudioBuffers scheduled back to back on one AudioContext; playback stops at
//   once on `realtime:user:speech:start` (barge-in), on Interrupt, on push to
//   talk and when the session ends; the played position of the item being
//   played goes to the backend every 100 ms (`played`), so a truncation cuts
//   the item where the listener actually is;
// * everything observed is counted in `status`, published as JSON in #status.

const SAMPLE_RATE = 24000;
const REPORT_EVERY_MS = 100;
const FIRST_CHUNK_LEAD_S = 0.08;

const $ = (id) => document.getElementById(id);

const status = {
  link: "connecting", // backend socket: connecting | open | closed
  session: "idle",
  connection: "idle",
  response: "idle",
  mic: "off", // off | starting | on | denied | unavailable
  pushToTalk: false,
  talking: false,
  events: 0,
  speechStarts: 0,
  speechStops: 0,
  userTranscripts: 0,
  assistantStarts: 0,
  assistantDone: 0,
  audioChunksReceived: 0,
  audioChunksPlayed: 0, // chunks that played to their end
  msPlayed: 0, // milliseconds of model audio actually played (cut chunks partly)
  audioChunksDropped: 0, // chunks of an item already cut
  playbackStops: 0, // playback cut while something was playing, any reason
  cuts: [], // the last few cuts: { itemId, playedMs, reason }
  bargeIns: 0, // ... because the user started talking
  interruptStops: 0, // ... because of Interrupt or push to talk
  playedReports: 0,
  lipsyncUpdates: 0,
  lipsyncMax: 0,
  micChunksSent: 0,
  micBytesSent: 0,
  toolCalls: 0,
  toolResults: 0,
  toolErrors: 0,
  errors: [], // error messages from the backend (not `played` ones)
  realtimeErrors: 0,
  sessionsStarted: 0,
  sessionsEnded: 0,
  closeCode: null,
};

function publish() {
  $("status").textContent = JSON.stringify(status);
  document.body.dataset.link = status.link;
  document.body.dataset.session = status.session;
  $("link-state").textContent = status.link;
  $("session-status").textContent = status.session;
  $("connection-status").textContent = status.connection;
  $("response-status").textContent = status.response;
  $("mic-status").textContent = status.mic;
  updateButtons();
}

function notice(text) {
  const box = $("notice");
  box.textContent = text;
  box.hidden = !text;
}

function log(text, kind) {
  const li = document.createElement("li");
  li.textContent = `${new Date().toLocaleTimeString()} ${text}`;
  if (kind) li.className = kind;
  const list = $("log");
  list.append(li);
  while (list.children.length > 200) list.firstElementChild.remove();
  list.scrollTop = list.scrollHeight;
}

// ------------------------------------------------------------------ socket

let socket = null;

function send(message) {
  if (socket && socket.readyState === WebSocket.OPEN) {
    socket.send(JSON.stringify(message));
    return true;
  }
  return false;
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  socket = new WebSocket(`${scheme}//${location.host}/session`);
  socket.binaryType = "arraybuffer";
  status.link = "connecting";
  publish();
  socket.onopen = () => {
    status.link = "open";
    notice("");
    publish();
  };
  socket.onmessage = (message) => {
    if (typeof message.data !== "string") return;
    let data;
    try {
      data = JSON.parse(message.data);
    } catch {
      log("the backend sent something that is not JSON", "error");
      return;
    }
    onBackendMessage(data);
  };
  socket.onclose = (closed) => {
    status.link = "closed";
    status.closeCode = closed.code;
    status.session = status.session === "active" ? "stopped" : status.session;
    player.stop("end");
    stopMic();
    const why = closed.reason ? `: ${closed.reason}` : "";
    notice(
      `The backend is gone (connection closed, code ${closed.code}${why}). ` +
        "Reload the page to connect again.",
    );
    log(`backend connection closed (${closed.code})`, "error");
    publish();
  };
}

function onBackendMessage(data) {
  switch (data.type) {
    case "hello": {
      const info = data.info || {};
      const parts = [];
      if (info.backend) parts.push(`talking to ${info.backend}`);
      if (info.model) parts.push(`model ${info.model}`);
      if (data.tools && data.tools.length) parts.push(`tools: ${data.tools.join(", ")}`);
      $("backend-info").textContent = parts.join(" · ");
      if (!data.pushToTalk) $("ptt-mode").dataset.unsupported = "1";
      break;
    }
    case "event":
      status.events++;
      onEvent(data.name, data.payload || {});
      break;
    case "done":
      if (data.command === "start" || data.command === "stop") log(`${data.command}: done`);
      break;
    case "error":
      if (data.command === "played") break; // a report for an item the engine forgot
      if (data.command === "start" && status.session === "starting") status.session = "idle";
      status.errors.push(`${data.code}: ${data.message}`);
      if (status.errors.length > 20) status.errors.shift();
      log(`${data.command ? data.command + ": " : ""}${data.message}`, "error");
      break;
    default:
      log(`unknown message from the backend: ${data.type}`, "error");
  }
  publish();
}

// ------------------------------------------------------------------ events

function showState(state) {
  if (!state) return;
  status.connection = state.connection;
  status.session = state.session.status;
  status.response = state.response.status;
  if (state.response.status === "interrupted") transcript.interrupted();
}

function onEvent(name, payload) {
  if (payload.state) showState(payload.state);
  switch (name) {
    case "realtime:session:start":
      status.sessionsStarted++;
      log("session started");
      break;
    case "realtime:session:end":
      status.sessionsEnded++;
      player.stop("end");
      log(`session ended (${payload.reason})`);
      break;
    case "realtime:user:speech:start":
      status.speechStarts++;
      $("user-speaking").classList.add("on");
      if (player.stop("barge-in")) {
        status.bargeIns++;
        log("you started talking: playback stopped (barge-in)");
      }
      transcript.userHeard(payload.itemId);
      break;
    case "realtime:user:speech:stop":
      status.speechStops++;
      $("user-speaking").classList.remove("on");
      break;
    case "realtime:user:transcript:delta":
      transcript.userDelta(payload.itemId, payload.text);
      break;
    case "realtime:user:transcript":
      status.userTranscripts++;
      transcript.userFinal(payload.text);
      break;
    case "realtime:assistant:start":
      status.assistantStarts++;
      transcript.assistantStart();
      break;
    case "realtime:assistant:delta":
      transcript.assistantDelta(payload.text);
      break;
    case "realtime:assistant:done":
      status.assistantDone++;
      transcript.assistantDone(payload.text);
      break;
    case "realtime:audio:delta":
      status.audioChunksReceived++;
      player.enqueue(payload.itemId, payload.audio);
      break;
    case "tts:lipsync:update":
      status.lipsyncUpdates++;
      status.lipsyncMax = Math.max(status.lipsyncMax, payload.rms);
      player.lipsync(payload.rms);
      break;
    case "realtime:tool:call":
      status.toolCalls++;
      tools.call(payload);
      break;
    case "realtime:tool:result":
      status.toolResults++;
      tools.result(payload.callId, payload.output, false);
      break;
    case "realtime:tool:error":
      status.toolErrors++;
      tools.result(payload.callId, payload.error, true);
      break;
    case "realtime:error":
      status.realtimeErrors++;
      log(`error: ${payload.error.message}`, "error");
      break;
    case "realtime:reconnect:attempt":
      log(`link lost (${payload.cause}): reconnecting, attempt ${payload.attempt}`);
      break;
    case "realtime:reconnect:success":
      log(`reconnected after ${payload.attempts} attempt(s)`);
      break;
    case "realtime:reconnect:exhausted":
      log("could not reconnect", "error");
      break;
    default:
      break;
  }
}

// ------------------------------------------------------------------ transcript

const transcript = {
  users: new Map(), // itemId -> li
  pending: [], // user lines waiting for their final transcript, oldest first
  assistant: null,

  line(kind, who, text) {
    const li = document.createElement("li");
    li.className = `${kind} partial`;
    const label = document.createElement("span");
    label.className = "who";
    label.textContent = who;
    const body = document.createElement("span");
    body.className = "text";
    body.textContent = text;
    li.append(label, body);
    const list = $("transcript");
    list.append(li);
    list.scrollTop = list.scrollHeight;
    return li;
  },
  text(li) {
    return li.querySelector(".text");
  },
  userLine(itemId) {
    let li = itemId ? this.users.get(itemId) : null;
    if (!li) {
      li = this.line("user", "you", "…");
      li.dataset.empty = "1";
      if (itemId) this.users.set(itemId, li);
      this.pending.push(li);
    }
    return li;
  },
  userHeard(itemId) {
    this.userLine(itemId);
  },
  userDelta(itemId, text) {
    const li = this.userLine(itemId);
    const body = this.text(li);
    if (li.dataset.empty) {
      body.textContent = "";
      delete li.dataset.empty;
    }
    body.textContent += text;
  },
  userFinal(text) {
    const li = this.pending.shift() || this.line("user", "you", "");
    this.text(li).textContent = text;
    delete li.dataset.empty;
    li.classList.remove("partial");
  },
  typed(text) {
    const li = this.line("user typed", "you (typed)", text);
    li.classList.remove("partial");
  },
  assistantStart() {
    this.assistant = this.line("assistant", "assistant", "");
  },
  assistantDelta(text) {
    if (!this.assistant) this.assistantStart();
    this.text(this.assistant).textContent += text;
  },
  assistantDone(text) {
    if (!this.assistant) this.assistantStart();
    this.text(this.assistant).textContent = text;
    this.assistant.classList.remove("partial");
    this.assistant = null;
  },
  interrupted() {
    if (this.assistant) {
      this.assistant.classList.remove("partial");
      this.assistant.classList.add("interrupted");
      this.assistant = null;
    }
  },
};

// ------------------------------------------------------------------ tool calls

const tools = {
  byId: new Map(),
  call(payload) {
    const li = document.createElement("li");
    li.className = "tool-call";
    li.dataset.name = payload.name;
    if (payload.callId) li.dataset.callId = payload.callId;
    const head = document.createElement("div");
    const name = document.createElement("b");
    name.textContent = payload.name;
    const args = document.createElement("code");
    args.textContent = JSON.stringify(payload.args);
    head.append(name, " ", args);
    const outcome = document.createElement("div");
    outcome.className = "outcome";
    outcome.textContent = "running…";
    li.append(head, outcome);
    $("tools").append(li);
    if (payload.callId) this.byId.set(payload.callId, li);
    log(`tool call: ${payload.name}`);
  },
  result(callId, value, failed) {
    const li = this.byId.get(callId);
    if (!li) return;
    const outcome = li.querySelector(".outcome");
    outcome.textContent = failed ? `failed: ${value.message}` : `→ ${JSON.stringify(value)}`;
    li.classList.add(failed ? "failed" : "done");
  },
};

// ------------------------------------------------------------------ audio

let audioContext = null;

async function ensureAudio() {
  if (!audioContext) {
    audioContext = new AudioContext({ latencyHint: "interactive" });
    player.attach(audioContext);
  }
  if (audioContext.state !== "running") await audioContext.resume();
  return audioContext;
}

function decodePcm16(base64) {
  const raw = atob(base64);
  const count = raw.length >> 1;
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) {
    let v = raw.charCodeAt(2 * i) | (raw.charCodeAt(2 * i + 1) << 8);
    if (v >= 0x8000) v -= 0x10000;
    out[i] = v / 0x8000;
  }
  return out;
}

const player = {
  ctx: null,
  out: null,
  nextTime: 0,
  playing: new Set(), // scheduled or sounding chunks
  items: new Map(), // itemId -> { receivedMs, chunks: [...], reported }
  cut: new Set(), // items whose playback was stopped: later chunks are dropped
  current: null, // itemId of the latest chunk scheduled
  lastStart: 0,
  generation: 0, // bumped on every stop: pending lip-sync frames are void

  attach(ctx) {
    this.ctx = ctx;
    this.out = ctx.createGain();
    this.out.connect(ctx.destination);
    setInterval(() => this.report(), REPORT_EVERY_MS);
  },

  enqueue(itemId, base64) {
    if (!this.ctx || (itemId && this.cut.has(itemId))) {
      status.audioChunksDropped++;
      return;
    }
    const samples = decodePcm16(base64);
    if (!samples.length) return;
    const ctx = this.ctx;
    const buffer = ctx.createBuffer(1, samples.length, SAMPLE_RATE);
    buffer.copyToChannel(samples, 0);
    const source = ctx.createBufferSource();
    source.buffer = buffer;
    source.connect(this.out);
    const start = Math.max(this.nextTime, ctx.currentTime + (this.playing.size ? 0 : FIRST_CHUNK_LEAD_S));
    const key = itemId || "";
    let item = this.items.get(key);
    if (!item) {
      item = { receivedMs: 0, chunks: [], reported: -1 };
      this.items.set(key, item);
    }
    const ms = (samples.length * 1000) / SAMPLE_RATE;
    const chunk = { source, start, duration: buffer.duration, ms, offsetMs: item.receivedMs, stopped: false };
    item.receivedMs += ms;
    item.chunks.push(chunk);
    if (item.chunks.length > 2000) item.chunks.splice(0, 1000);
    source.onended = () => {
      this.playing.delete(chunk);
      if (!chunk.stopped) {
        status.audioChunksPlayed++;
        status.msPlayed += Math.round(chunk.ms);
        if (!this.playing.size) this.mouth(0);
        publish();
      }
    };
    source.start(start);
    this.playing.add(chunk);
    this.nextTime = start + buffer.duration;
    this.current = key;
    this.lastStart = start;
  },

  // Where playback of `key` stands now, in ms of the item's audio.
  playedMs(key) {
    const item = this.items.get(key);
    if (!item || !this.ctx) return 0;
    const now = this.ctx.currentTime;
    let position = 0;
    for (const chunk of item.chunks) {
      if (now < chunk.start || chunk.stopped) continue;
      const heard = now - chunk.start >= chunk.duration ? chunk.ms : (now - chunk.start) * 1000;
      position = Math.max(position, chunk.offsetMs + heard);
    }
    if (item.stoppedAt !== undefined) position = Math.max(position, item.stoppedAt);
    return Math.floor(position);
  },

  report(force) {
    const key = this.current;
    if (!key) return;
    const item = this.items.get(key);
    if (!item) return;
    const played = this.playedMs(key);
    if (played === item.reported || (!force && !this.playing.size)) return;
    item.reported = played;
    if (send({ type: "played", itemId: key, playedMs: played })) status.playedReports++;
  },

  // Stop all playback at once; true when something was playing or scheduled.
  stop(reason) {
    this.generation++;
    this.mouth(0);
    if (!this.ctx || !this.playing.size) return false;
    const now = this.ctx.currentTime;
    // Final positions first (before the chunks are marked stopped).
    const key = this.current;
    const item = key !== null ? this.items.get(key) : null;
    if (item) {
      item.stoppedAt = this.playedMs(key);
      status.cuts.push({ itemId: key, playedMs: item.stoppedAt, reason });
      if (status.cuts.length > 10) status.cuts.shift();
    }
    for (const chunk of this.playing) {
      const heard = Math.min(Math.max(now - chunk.start, 0), chunk.duration);
      chunk.stopped = true;
      status.msPlayed += Math.round(heard * 1000);
      try {
        chunk.source.stop();
      } catch {
        // already stopped
      }
    }
    this.playing.clear();
    this.nextTime = now;
    if (key) {
      this.report(true);
      this.cut.add(key);
    }
    status.playbackStops++;
    log(`playback stopped (${reason})`);
    return true;
  },

  lipsync(rms) {
    if (!this.ctx) return;
    const generation = this.generation;
    const delay = Math.max(0, (this.lastStart - this.ctx.currentTime) * 1000);
    setTimeout(() => {
      if (generation === this.generation) this.mouth(rms);
    }, delay);
  },

  mouth(rms) {
    const level = Math.min(1, rms * 3);
    $("mouth").style.transform = `scaleY(${(0.12 + 0.88 * level).toFixed(3)})`;
    $("lipsync").value = Math.min(1, rms);
  },
};

// ------------------------------------------------------------------ microphone

const mic = { stream: null, source: null, node: null, sink: null };

async function startMic() {
  if (mic.node) return true;
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    status.mic = "unavailable";
    notice(
      "This browser cannot capture the microphone here (it needs https:// or localhost). " +
        "You can still type messages.",
    );
    return false;
  }
  status.mic = "starting";
  publish();
  const ctx = await ensureAudio();
  try {
    mic.stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    });
  } catch (error) {
    const refused = error && (error.name === "NotAllowedError" || error.name === "SecurityError");
    status.mic = refused ? "denied" : "unavailable";
    notice(
      refused
        ? "Microphone access was refused. Allow the microphone for this page and press Start " +
            "again, or type your messages below."
        : `No microphone could be opened (${error && error.name}). You can still type messages.`,
    );
    log(`microphone: ${error && error.name}`, "error");
    publish();
    return false;
  }
  await ctx.audioWorklet.addModule("/static/capture-worklet.js");
  mic.source = ctx.createMediaStreamSource(mic.stream);
  mic.node = new AudioWorkletNode(ctx, "pcm16-capture", {
    processorOptions: { targetRate: SAMPLE_RATE, chunkMs: 40 },
  });
  mic.sink = ctx.createGain();
  mic.sink.gain.value = 0; // keeps the worklet pulled without making a sound
  mic.source.connect(mic.node);
  mic.node.connect(mic.sink);
  mic.sink.connect(ctx.destination);
  mic.node.port.onmessage = (message) => onMicChunk(message.data);
  status.mic = "on";
  notice("");
  publish();
  return true;
}

function stopMic() {
  if (mic.stream) mic.stream.getTracks().forEach((track) => track.stop());
  if (mic.source) mic.source.disconnect();
  if (mic.node) {
    mic.node.port.onmessage = null;
    mic.node.disconnect();
  }
  if (mic.sink) mic.sink.disconnect();
  mic.stream = mic.source = mic.node = mic.sink = null;
  if (status.mic === "on" || status.mic === "starting") status.mic = "off";
}

function onMicChunk(buffer) {
  if (status.session !== "active") return;
  if (status.pushToTalk && !status.talking) return;
  if (socket && socket.readyState === WebSocket.OPEN) {
    socket.send(buffer);
    status.micChunksSent++;
    status.micBytesSent += buffer.byteLength;
    if (status.micChunksSent % 25 === 0) publish();
  }
}

// ------------------------------------------------------------------ controls

function updateButtons() {
  const open = status.link === "open";
  const active = status.session === "active";
  const busy = status.session === "starting" || status.session === "stopping";
  $("start").disabled = !open || active || busy;
  $("stop").disabled = !open || !(active || status.session === "starting");
  $("interrupt").disabled = !open || !active;
  $("talk").disabled = !open || !active || !status.pushToTalk || status.mic !== "on";
  $("ptt-mode").disabled = active || busy || $("ptt-mode").dataset.unsupported === "1";
  $("text-input").disabled = !open || !active;
  $("send").disabled = !open || !active;
}

async function onStart() {
  status.pushToTalk = $("ptt-mode").checked;
  await ensureAudio();
  await startMic();
  send({ type: "start", pushToTalk: status.pushToTalk });
  status.session = "starting";
  publish();
}

function onStop() {
  player.stop("stop");
  send({ type: "stop" });
  stopMic();
  publish();
}

function interruptNow(reason) {
  if (player.stop(reason)) status.interruptStops++;
  send({ type: "interrupt" });
  publish();
}

function talkDown(event) {
  if ($("talk").disabled || status.talking) return;
  event.preventDefault();
  status.talking = true;
  $("talk").classList.add("active");
  $("talk").textContent = "Release to send";
  if (player.playing.size || status.response === "responding") interruptNow("push to talk");
  publish();
}

function talkUp(commit) {
  if (!status.talking) return;
  status.talking = false;
  $("talk").classList.remove("active");
  $("talk").textContent = "Hold to talk";
  send({ type: commit ? "commit" : "clear" });
  publish();
}

function setup() {
  $("start").addEventListener("click", () => {
    onStart().catch((error) => log(`start: ${error}`, "error"));
  });
  $("stop").addEventListener("click", onStop);
  $("interrupt").addEventListener("click", () => interruptNow("interrupt"));
  const talk = $("talk");
  talk.addEventListener("pointerdown", talkDown);
  talk.addEventListener("pointerup", () => talkUp(true));
  talk.addEventListener("pointercancel", () => talkUp(false));
  talk.addEventListener("pointerleave", () => talkUp(false));
  talk.addEventListener("keydown", (event) => {
    if (event.key === " " && !event.repeat) talkDown(event);
  });
  talk.addEventListener("keyup", (event) => {
    if (event.key === " ") talkUp(true);
  });
  $("text-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = $("text-input");
    const text = input.value.trim();
    if (!text) return;
    if (send({ type: "text", text })) {
      transcript.typed(text);
      input.value = "";
    }
  });
  connect();
  publish();
}

// For the console and tests: what the page observed, and its audio graph.
window.charivo = { status, player, mic, get audioContext() { return audioContext; } };

setup();
