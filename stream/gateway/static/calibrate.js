// "Teach harstream this phone": leads the person through a few activities,
// one take each, over the page's own WebSocket (see phone.js). The gateway
// keeps this device's 50 Hz samples between "start" and "stop", checks each
// take, and on "finish" fits a personal model (docs/phones.md, Calibration).
//
// The countdown runs on the readings' own times, so it only moves while the
// phone really sends motion. URL parameters: ?calib=SECONDS per activity
// (default 40, at least 20), ?ready=SECONDS to get into position (default 5).
"use strict";

(() => {
  const hs = window.harstream;
  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);
  const number = (name, fallback, lo, hi) => {
    const v = Number(params.get(name));
    return params.has(name) && Number.isFinite(v) ? Math.min(hi, Math.max(lo, v)) : fallback;
  };
  const STEP_S = number("calib", 40, 20, 120);
  const READY_S = number("ready", 5, 0, 30);
  const G = 9.80665;
  const MOVING_STD = 0.04 * G; // m/s²: the gateway's test (stream/calibration.py, MOVING_STD_G)
  const LIVE_WINDOW_MS = 2000;

  const STEPS = [
    { activity: "walk", name: "Walk", moving: true, say: "Walk at your usual pace." },
    { activity: "sit", name: "Sit", moving: false, say: "Sit down and stay still." },
    { activity: "stand", name: "Stand", moving: false, say: "Stand still." },
    { activity: "lie", name: "Lie down", moving: false, say: "Lie down and stay still." },
    { activity: "upstairs", name: "Walk upstairs", moving: true, say: "Walk up a flight of stairs (skip if there are none)." },
    { activity: "downstairs", name: "Walk downstairs", moving: true, say: "Walk down a flight of stairs (skip if there are none)." },
  ];

  const SAID = {
    WALKING: "walking", WALKING_UPSTAIRS: "walking upstairs", WALKING_DOWNSTAIRS: "walking downstairs",
    SITTING: "sitting", STANDING: "standing", LAYING: "lying down",
  };
  const said = (activity) => SAID[activity] || activity.toLowerCase();

  const cal = {
    phase: "idle", // idle | ready | get-ready | recording | checking | fitting | done
    step: 0, first: null, last: null, recent: [], moving: null, liveChecks: 0, liveRight: 0,
    takes: {}, result: null, timer: null, stepSeconds: STEP_S,
  };
  hs.calibration = cal;
  $("cal-seconds").textContent = String(STEP_S);

  function show(id, visible) { $(id).hidden = !visible; }

  function setPhase(phase) {
    cal.phase = phase;
    document.body.dataset.calibration = phase;
  }

  function showStep() {
    const step = STEPS[cal.step];
    setPhase("ready");
    show("cal-step", true);
    $("cal-progress").textContent = `Activity ${cal.step + 1} of ${STEPS.length}`;
    $("cal-instruction").textContent = `${step.name}: ${step.say}`;
    $("cal-countdown").textContent = `${STEP_S} s`;
    $("cal-bar").value = 0;
    $("cal-live").textContent = "";
    $("cal-check").textContent = "";
    $("cal-check").className = "";
    $("cal-go").textContent = "Start";
    show("cal-go", true);
    show("cal-next", false);
    $("cal-skip").textContent = "Skip this one";
    show("cal-skip", true);
    $("cal-go").focus();
  }

  async function begin() {
    if (!(await hs.start())) return; // no motion permission: phone.js says why
    $("cal-result").textContent = "";
    cal.step = 0;
    cal.takes = {};
    show("cal-begin", false);
    showStep();
  }

  function go() {
    show("cal-go", false);
    show("cal-next", false);
    $("cal-check").textContent = "";
    let left = READY_S;
    setPhase("get-ready");
    const tick = () => {
      if (left <= 0) return record();
      $("cal-countdown").textContent = `get ready: ${left}`;
      left -= 1;
      cal.timer = setTimeout(tick, 1000);
    };
    tick();
  }

  function record() {
    const step = STEPS[cal.step];
    cal.first = cal.last = null;
    cal.recent = [];
    cal.liveChecks = cal.liveRight = 0;
    if (!hs.sendNow({ type: "calibrate", action: "start", activity: step.activity })) {
      $("cal-check").textContent = "not connected to the gateway; try again when the connection says streaming";
      $("cal-check").className = "refused";
      show("cal-go", true);
      $("cal-go").textContent = "Retry";
      setPhase("ready");
      return;
    }
    setPhase("recording");
    $("cal-countdown").textContent = `${STEP_S} s`;
    $("cal-live").textContent = "waiting for motion readings…";
  }

  // Every acceleration reading: the countdown (by the readings' own times)
  // and the live check, over the last 2 s, that the phone moves or rests as asked.
  function onReading(t, acc) {
    if (cal.phase !== "recording") return;
    if (cal.first === null) cal.first = t;
    cal.last = t;
    cal.recent.push([t, Math.hypot(acc[0], acc[1], acc[2])]);
    while (cal.recent.length && cal.recent[0][0] < t - LIVE_WINDOW_MS) cal.recent.shift();
    const seconds = (cal.last - cal.first) / 1000;
    if (!cal.lastShown || t - cal.lastShown >= 250 || t < cal.lastShown) {
      cal.lastShown = t;
      $("cal-countdown").textContent = `${Math.max(0, Math.ceil(STEP_S - seconds))} s`;
      $("cal-bar").value = Math.min(1, seconds / STEP_S);
      if (cal.recent.length > 10 && cal.recent[cal.recent.length - 1][0] - cal.recent[0][0] > LIVE_WINDOW_MS / 2) {
        const m = cal.recent.map((r) => r[1]);
        const mean = m.reduce((a, b) => a + b, 0) / m.length;
        const sd = Math.sqrt(m.reduce((a, b) => a + (b - mean) ** 2, 0) / m.length);
        cal.moving = sd > MOVING_STD;
        const want = STEPS[cal.step].moving;
        cal.liveChecks += 1;
        if (cal.moving === want) cal.liveRight += 1;
        $("cal-live").textContent = cal.moving === want
          ? `✓ the phone is ${cal.moving ? "moving" : "still"}, as asked`
          : `✗ the phone is ${cal.moving ? "moving: keep it still" : "still: keep walking"}`;
        $("cal-live").className = cal.moving === want ? "ok" : "refused";
      }
    }
    if (seconds >= STEP_S) stop();
  }

  function stop() {
    setPhase("checking");
    $("cal-countdown").textContent = "checking…";
    if (!hs.sendNow({ type: "calibrate", action: "stop" })) {
      $("cal-check").textContent = "connection lost during the take; retry it";
      $("cal-check").className = "refused";
      afterTake(false, false);
    }
  }

  // After a take: retry it, go on (a questioned take is kept anyway, and
  // the fit says whether it used it), or skip it (the take is dropped).
  function afterTake(ok, recorded) {
    setPhase("ready");
    show("cal-go", true);
    $("cal-go").textContent = "Retry";
    show("cal-next", recorded);
    $("cal-next").textContent = ok ? "Keep it, next" : "Keep it anyway, next";
    $("cal-skip").textContent = recorded ? "Skip (do not use this take)" : "Skip this one";
    (ok ? $("cal-next") : $("cal-go")).focus();
  }

  function next() {
    cal.step += 1;
    if (cal.step < STEPS.length) showStep();
    else finish();
  }

  function skip() {
    clearTimeout(cal.timer);
    const step = STEPS[cal.step];
    if (cal.takes[step.activity]) {
      hs.sendNow({ type: "calibrate", action: "discard", activity: step.activity });
      delete cal.takes[step.activity];
    } else if (cal.phase === "recording" || cal.phase === "checking") {
      hs.sendNow({ type: "calibrate", action: "stop" });
      hs.sendNow({ type: "calibrate", action: "discard", activity: step.activity });
    }
    next();
  }

  function finish() {
    show("cal-step", false);
    if (!Object.keys(cal.takes).length) {
      $("cal-result").textContent = "Nothing recorded, so nothing to learn. Tap the button to start again.";
      show("cal-begin", true);
      setPhase("idle");
      return;
    }
    setPhase("fitting");
    $("cal-result").textContent = "Learning this phone…";
    if (!hs.sendNow({ type: "calibrate", action: "finish" })) {
      $("cal-result").textContent = "Not connected to the gateway: reconnect and tap the button to calibrate again.";
      show("cal-begin", true);
      setPhase("idle");
    }
  }

  function showResult(msg) {
    cal.result = msg;
    setPhase("done");
    const box = $("cal-result");
    box.textContent = "";
    const head = document.createElement("p");
    head.textContent = `Done in ${msg.fit_seconds} s: ${msg.model}. The worker serves it within a second or two (mode: personal).`;
    box.append(head);
    const list = document.createElement("ul");
    for (const activity of msg.calibrated) {
      const li = document.createElement("li");
      li.className = "kept";
      li.textContent = `✓ ${said(activity)} learned`;
      list.append(li);
    }
    for (const [activity, reason] of Object.entries(msg.refused)) {
      const li = document.createElement("li");
      li.className = "refused";
      li.textContent = `✗ ${said(activity)} not used: ${reason}`;
      list.append(li);
    }
    box.append(list);
    if (Array.isArray(msg.summary) && msg.summary.length) {
      const learned = document.createElement("ul");
      learned.id = "cal-summary";
      for (const line of msg.summary) {
        const li = document.createElement("li");
        li.textContent = String(line);
        learned.append(li);
      }
      box.append(learned);
    }
    $("cal-begin").textContent = "Calibrate again";
    show("cal-begin", true);
  }

  hs.onCalibration = (msg) => {
    if (msg.event === "take") {
      const ok = msg.ok;
      $("cal-check").textContent = ok
        ? `✓ ${msg.seconds} s recorded, moving in ${Math.round(msg.moving_share * 100)}% of it`
        : `✗ ${msg.reason}`;
      $("cal-check").className = ok ? "ok" : "refused";
      $("cal-countdown").textContent = ok ? "done" : "retry?";
      cal.takes[STEPS[cal.step].activity] = msg;
      afterTake(ok, true);
    } else if (msg.event === "done") {
      showResult(msg);
    } else if (msg.event === "error") {
      if (cal.phase === "fitting") {
        $("cal-result").textContent = `Calibration failed: ${msg.detail}`;
        $("cal-result").className = "refused";
        show("cal-begin", true);
        setPhase("idle");
      } else {
        $("cal-check").textContent = `✗ ${msg.detail}`;
        $("cal-check").className = "refused";
        if (cal.phase !== "idle") afterTake(false, Boolean(cal.takes[STEPS[cal.step].activity]));
      }
    }
  };

  hs.motionListeners.push(onReading);
  $("cal-begin").addEventListener("click", begin);
  $("cal-go").addEventListener("click", go);
  $("cal-next").addEventListener("click", next);
  $("cal-skip").addEventListener("click", skip);
})();
