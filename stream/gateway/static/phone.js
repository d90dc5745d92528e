// Streams this phone's DeviceMotion to the harstream gateway over /ws
// (protocol: docs/websocket-protocol.md) and shows the predictions coming back.
"use strict";

const G = 9.80665;
const FLUSH_MS = 200;
const MAX_HELD = 500; // readings per sensor kept while disconnected (older ones would be a gap anyway)
const MAX_RETRY_MS = 15000;

function deviceId() {
  let id = localStorage.getItem("harstream-device");
  if (!id) {
    const bytes = crypto.getRandomValues(new Uint8Array(4));
    id = "web-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
    localStorage.setItem("harstream-device", id);
  }
  return id;
}

// iOS Safari reports accelerationIncludingGravity with the opposite sign to
// the W3C/Android convention (flat, face up: z = -9.8 instead of +9.8).
// ?frame=w3c or ?frame=ios in the page URL overrides the guess.
function frame() {
  const forced = new URLSearchParams(location.search).get("frame");
  if (forced === "w3c" || forced === "ios") return forced;
  const ios = /iPhone|iPad|iPod/.test(navigator.userAgent) ||
    (navigator.platform === "MacIntel" && navigator.maxTouchPoints > 1);
  return ios ? "ios" : "w3c";
}

function socketUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const token = new URLSearchParams(location.search).get("token");
  return `${scheme}//${location.host}/ws` + (token ? `?token=${encodeURIComponent(token)}` : "");
}

const state = {
  device: deviceId(), busDevice: null, ws: null, acc: [], gyro: [], sent: 0, started: false, predictions: 0,
  retryMs: 1000, reconnects: 0, mode: null, model: null, worn: null,
  motionListeners: [], // calibrate.js: called with (t ms, [x, y, z] m/s²) for every acceleration reading
  onCalibration: null, // calibrate.js: called with every {type: "calibration"} answer
};
const $ = (id) => document.getElementById(id);

// The devicemotion listener: one reading of each sensor per event, stamped
// with the event's own time (ms since the Unix epoch).
function onMotion(event) {
  const t = performance.timeOrigin + event.timeStamp;
  const a = event.accelerationIncludingGravity;
  const r = event.rotationRate;
  if (a && a.x !== null && a.y !== null && a.z !== null) {
    state.acc.push([t, a.x, a.y, a.z]);
    for (const listener of state.motionListeners) listener(t, [a.x, a.y, a.z]);
  }
  // rotationRate: alpha about z, beta about x, gamma about y (deg/s).
  if (r && r.alpha !== null && r.beta !== null && r.gamma !== null) {
    state.gyro.push([t, r.beta, r.gamma, r.alpha]);
  }
}

function flush() {
  const ws = state.ws;
  if (!ws || ws.readyState !== WebSocket.OPEN) {
    // Bounded while the gateway is away: a restart must not end in one huge message.
    state.acc = state.acc.slice(-MAX_HELD);
    state.gyro = state.gyro.slice(-MAX_HELD);
    return;
  }
  if (!state.acc.length && !state.gyro.length) return;
  const last = state.acc[state.acc.length - 1];
  if (last) $("acc").textContent = last.slice(1).map((v) => (v / G).toFixed(2)).join("  ");
  ws.send(JSON.stringify({ type: "samples", acc: state.acc, gyro: state.gyro }));
  state.sent += state.acc.length + state.gyro.length;
  state.acc = [];
  state.gyro = [];
  $("sent").textContent = String(state.sent);
}

// Sends a message after every reading taken so far, so that the gateway sees
// them before it (a calibration take starts and stops at the newest reading the
// gateway has when these messages come). False when offline.
function sendNow(message) {
  flush();
  const ws = state.ws;
  if (!ws || ws.readyState !== WebSocket.OPEN || !state.busDevice) return false;
  ws.send(JSON.stringify(message));
  return true;
}

const MODE_TEXT = {
  any: "any placement: moving or still, walking (a browser has no barometer: stairs are not claimed); calibrate to see sitting/standing/lying",
  personal: "calibrated on this phone",
  waist: "the waist model (phone worn at the waist, like the HAPT recordings)",
};

// Where the worker's gait estimate says the phone is worn (any/personal mode, only while walking).
const WORN_TEXT = { waist: "waist", thigh: "thigh (pocket)", wrist: "wrist" };

function showMode(msg) {
  const worn = WORN_TEXT[msg.placement] || null;
  if (!msg.mode || (msg.mode === state.mode && msg.model === state.model && worn === state.worn)) return;
  state.mode = msg.mode;
  state.model = msg.model;
  state.worn = worn;
  let text = MODE_TEXT[msg.mode] || "";
  if (msg.mode === "personal" && Array.isArray(msg.classes)) {
    const postures = msg.classes.filter((c) => ["SITTING", "STANDING", "LAYING"].includes(c));
    text += postures.length ? ` (${postures.map((c) => c.toLowerCase()).join(", ")})` : " (no posture kept)";
  }
  if (worn) text += ` · worn: ${worn}, estimated from the gait`;
  $("mode").textContent = `mode: ${msg.mode}${text ? " — " + text : ""}`;
  $("model").textContent = msg.model || "–";
}

function connect() {
  $("status").textContent = "connecting…";
  const ws = new WebSocket(socketUrl());
  state.ws = ws;
  ws.onopen = () => {
    ws.send(JSON.stringify({
      type: "hello", device: state.device, units: { acc: "m/s2", gyro: "deg/s" },
      frame: frame(), key: localStorage.getItem("harstream-key") || undefined,
    }));
  };
  ws.onmessage = (message) => {
    const msg = JSON.parse(message.data);
    if (msg.type === "welcome") {
      localStorage.setItem("harstream-key", msg.key);
      state.busDevice = msg.bus_device;
      state.retryMs = 1000;
      $("bus-device").textContent = msg.bus_device;
      $("status").textContent = "streaming";
    } else if (msg.type === "prediction") {
      state.predictions += 1;
      $("activity").textContent = (msg.smoothed || msg.label).replaceAll("_", " ").toLowerCase();
      showMode(msg);
    } else if (msg.type === "calibration") {
      if (state.onCalibration) state.onCalibration(msg);
    } else if (msg.type === "error" || msg.type === "warning") {
      $("error").textContent = `${msg.reason}: ${msg.detail}`;
    }
  };
  ws.onclose = (event) => {
    // The gateway restarting or a network hiccup: reconnect with back-off
    // (1 s doubling to 15 s); the same device id and key take the id back.
    const wait = state.retryMs;
    $("status").textContent = `disconnected (${event.code}${event.reason ? " " + event.reason : ""}); retrying in ${wait / 1000} s`;
    state.ws = null;
    state.reconnects += 1;
    state.retryMs = Math.min(state.retryMs * 2, MAX_RETRY_MS);
    setTimeout(connect, wait);
  };
}

async function start() {
  if (state.started) return true;
  $("error").textContent = "";
  // iOS asks the user, and only from a tap; elsewhere there is nothing to ask.
  if (typeof DeviceMotionEvent !== "undefined" && typeof DeviceMotionEvent.requestPermission === "function") {
    try {
      if (await DeviceMotionEvent.requestPermission() !== "granted") {
        $("error").textContent = "motion sensor permission denied";
        return false;
      }
    } catch (err) {
      $("error").textContent = String(err);
      return false;
    }
  }
  if (!window.isSecureContext) {
    $("error").textContent = "motion sensors need https:// (see docs/phones.md)";
  }
  state.started = true;
  window.addEventListener("devicemotion", onMotion);
  setInterval(flush, FLUSH_MS);
  connect();
  $("start").disabled = true;
  return true;
}

$("device").textContent = state.device;
$("start").addEventListener("click", start);
state.start = start;
state.sendNow = sendNow;
window.harstream = state;
