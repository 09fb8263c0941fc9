"use strict";
// fervid web app, plain JavaScript (no build step, no CDN).
// Webcam: a frame is drawn on a canvas, sent as JPEG over the WebSocket /ws, and the next one only
// when the JSON reply ({faces, width, height, ms}) has come back, so the page runs at the speed the
// server keeps up with. Photo: POST /api/predict. Both draw boxes, labels and probability bars.

const EXPRESSIONS = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"];
const COLORS = {  // the same colours as the desktop renderer (fervid.runtime.render)
  angry: "#dc2828", disgust: "#3c8c28", fear: "#a03ca0", happy: "#f0c828",
  neutral: "#c8c8c8", sad: "#2878c8", surprise: "#dca0f0",
};
// Label text readable on each colour (WCAG AA, 4.5:1): white on angry 4.8, fear 5.8, sad 4.6; black on
// disgust 5.0 (white gives it 4.2); near-black on the light ones. #111 gave fear 3.3.
const TEXT_ON = { angry: "#fff", disgust: "#000", fear: "#fff", sad: "#fff" };
const FRAME_WIDTH = 640;      // frames wider than this are shrunk before sending
const JPEG_QUALITY = 0.8;
const PHOTO_WIDTH = 1280;     // photos are shown at most this wide
const RETRY_MS = 2000;       // the first wait before reconnecting; doubled after each refusal, up to RETRY_MAX_MS
const RETRY_MAX_MS = 30000;
const STALL_MS = 5000;        // no answer to a frame for this long: the server or the network hangs; say so
const GIVE_UP_MS = 20000;     // no answer for this long: drop the connection and open a new one
const HANDSHAKE_MS = 10000;   // a connection not open by then is given up and tried again
const UPLOAD_TIMEOUT_MS = 60000;
const LABEL_HEIGHT = 22;      // CSS pixels of a face's label; a panel of bars is PANEL_WIDTH wide, a row PANEL_ROW high
const PANEL_WIDTH = 150;
const PANEL_ROW = 15;
const BARS_MIN_WIDTH = 400;  // CSS pixels of view below which the overlay draws no probability bars (a phone)
const CONFIRM_FRAMES = 2;     // the server shows a face from the second frame it is found in (fervid.runtime.track)
const CLOSE_POLICY = 1008;    // the server refused this page: retrying will not help
const CLOSE_REASONS = {       // what a close code means to a user; the server's own reason, when it gives one, is shown too
  1001: "the server is stopping", 1006: "connection lost", 1011: "server error", 1012: "the server stopped or is restarting",
  1013: "the server is busy",
};

const $ = (id) => document.getElementById(id);
const percent = (value) => `${Math.round(value * 100)}%`;

const live = {
  stream: null,
  socket: null,
  inFlight: false,
  sentAt: 0,
  faces: [],
  frame: { width: 1, height: 1 },
  roundTrips: [],
  serverTimes: [],
  answeredAt: [],
  retry: null,
  retries: 0,   // connections closed since the last answer (a live one dropped, then refused, busy, or no server)
  watchdog: null,
  answered: 0,  // frames answered since the page opened (data-frames on <body>, for tests and curious users)
  answeredHere: 0,  // frames answered on this connection: its first answer cannot show a face yet
  videoFrames: 0,      // frames the camera has shown, where the browser counts them (requestVideoFrameCallback)
  sentVideoFrame: -1,  // which of them was sent last: each is sent once
  waitingForFrame: false,
  frameWatch: null,    // the current stream's frame counter, so an old one stops
};
const capture = document.createElement("canvas");

function setStatus(element, text, isError = false) {
  // Written only when it changes: a role="status" element is read out by screen readers at every change.
  if (element.textContent !== text) element.textContent = text;
  element.classList.toggle("error", isError);
}

// --- Drawing: shared by the live overlay and the photo ---

function drawResults(context, faces, scale, bounds, mirrored, unit) {
  const boxes = faces.map((face) => {
    const [x, y, w, h] = face.box.map((value) => value * scale);
    return [mirrored ? bounds.width - x - w : x, y, w, h];
  });
  const labels = [];  // where each label is drawn: the bars keep off them too
  faces.forEach((face, index) => {
    const color = COLORS[face.expression] || "#4fb3ff";
    const [x, y, w, h] = boxes[index];
    context.lineWidth = 2.5 * unit;
    context.strokeStyle = color;
    context.strokeRect(x, y, w, h);

    const label = `${face.expression} ${percent(face.confidence)}`;
    context.font = `600 ${15 * unit}px system-ui, sans-serif`;
    const labelWidth = context.measureText(label).width + 10 * unit;
    const labelHeight = LABEL_HEIGHT * unit;
    const labelTop = y >= labelHeight ? y - labelHeight : y;
    // kept inside the view: a face at its right edge would show "angry 4" on a narrow screen
    const labelLeft = Math.max(0, Math.min(x - context.lineWidth / 2, bounds.width - labelWidth));
    labels.push([labelLeft, labelTop, labelWidth, labelHeight]);
    context.fillStyle = color;
    context.fillRect(labelLeft, labelTop, labelWidth, labelHeight);
    context.fillStyle = TEXT_ON[face.expression] || "#111";
    context.fillText(label, labelLeft + context.lineWidth / 2 + 4 * unit, labelTop + 16 * unit);
  });
  // The bars need about half of a phone's width: there, the list under the view shows them instead.
  if (bounds.width < BARS_MIN_WIDTH * unit) return;
  placePanels(boxes, bounds, unit, labels).forEach((rect, index) => drawBars(context, faces[index].probabilities, rect, unit));
}

const overlapArea = ([ax, ay, aw, ah], [bx, by, bw, bh]) =>
  Math.max(0, Math.min(ax + aw, bx + bw) - Math.max(ax, bx)) * Math.max(0, Math.min(ay + ah, by + bh) - Math.max(ay, by));

function placePanels(boxes, bounds, unit, labels = []) {
  // As the desktop renderer places them (fervid.runtime.render.place_panels): right of the face, else
  // left, below or above (above its label), the first place inside the view that covers no face, no
  // label and no panel placed before it; where every place covers something, the one covering least.
  // labels: where each label was drawn, as wide as its text (wider than most boxes).
  const panelWidth = PANEL_WIDTH * unit;
  const panelHeight = (PANEL_ROW * EXPRESSIONS.length + 8) * unit;
  const gap = 8 * unit;
  const label = LABEL_HEIGHT * unit;
  const clamp = (value, most) => Math.max(0, Math.min(value, Math.max(0, most)));
  const faces = boxes.map(([x, y, w, h]) => [x, Math.max(0, y - label), w, h + Math.min(y, label)]).concat(labels);
  const placed = [];
  for (const [x, y, w, h] of boxes) {
    const top = clamp(y, bounds.height - panelHeight);
    const middle = clamp(x + (w - panelWidth) / 2, bounds.width - panelWidth);
    const candidates = [[x + w + gap, top], [x - gap - panelWidth, top], [middle, y + h + gap], [middle, y - label - gap - panelHeight]];
    let best = null;
    for (const [left, upper] of candidates) {
      const rect = [clamp(left, bounds.width - panelWidth), clamp(upper, bounds.height - panelHeight), panelWidth, panelHeight];
      const covered = [...faces, ...placed].reduce((sum, other) => sum + overlapArea(rect, other), 0);
      if (!best || covered < best.covered) best = { covered, rect };
      if (covered === 0) break;
    }
    placed.push(best.rect);
  }
  return placed;
}

function drawBars(context, probabilities, rect, unit) {
  const [left, top, panelWidth, panelHeight] = rect;
  const row = PANEL_ROW * unit;
  context.fillStyle = "rgba(0, 0, 0, 0.75)";
  context.fillRect(left, top, panelWidth, panelHeight);
  context.font = `${11 * unit}px system-ui, sans-serif`;
  const barLeft = left + 62 * unit;
  const barWidth = panelWidth - 70 * unit;
  EXPRESSIONS.forEach((name, index) => {
    const rowTop = top + 4 * unit + index * row;
    context.fillStyle = "#ddd";
    context.fillText(name, left + 6 * unit, rowTop + row - 4 * unit);
    context.fillStyle = COLORS[name];
    context.fillRect(barLeft, rowTop + 3 * unit, barWidth * (probabilities[name] || 0), row - 6 * unit);
  });
  return rect;
}

function listFaces(list, faces) {
  list.replaceChildren(...faces.map((face) => {
    const item = document.createElement("li");
    item.dataset.expression = face.expression;
    item.dataset.confidence = String(face.confidence);
    item.style.setProperty("--color", COLORS[face.expression]);
    const label = document.createElement("div");
    label.className = "label";
    label.textContent = `${face.expression} ${percent(face.confidence)}`;
    item.append(label, ...EXPRESSIONS.map((name) => bar(name, face.probabilities[name] || 0)));
    return item;
  }));
}

function bar(name, value) {
  const row = document.createElement("div");
  row.className = "bar";
  row.style.setProperty("--color", COLORS[name]);
  const title = document.createElement("span");
  title.textContent = name;
  const track = document.createElement("span");
  track.className = "track";
  const fill = document.createElement("span");
  fill.className = "fill";
  fill.style.display = "block";
  fill.style.width = percent(value);
  track.append(fill);
  const number = document.createElement("span");
  number.className = "value";
  number.textContent = percent(value);
  row.append(title, track, number);
  return row;
}

// --- Webcam ---

async function startCamera() {
  const status = $("status");
  if (live.stream) return;
  if (!cameraAllowedHere()) {
    setStatus(status, NO_CAMERA_HERE, true);
    return;
  }
  $("start").disabled = true;
  setStatus(status, "asking for the camera…");
  try {
    // resizeMode "none": the camera's own picture nearest 640x480, never cropped to that shape (a camera
    // that gives only portrait pictures came as a 480x480 square, the faces above and below cut away).
    const picture = { width: { ideal: 640 }, height: { ideal: 480 }, resizeMode: { ideal: "none" } };
    live.stream = await navigator.mediaDevices.getUserMedia({ video: picture, audio: false });
  } catch (error) {
    $("start").disabled = false;
    $("start").focus();  // disabling it dropped the keyboard focus on the page itself
    const hint = error.name === "NotAllowedError" ? "; allow the camera for this page in the browser's site settings"
      : error.name === "NotFoundError" ? "; connect a camera" : error.name === "NotReadableError" ? "; another app may be using it" : "";
    setStatus(status, `no camera: ${error.name}${error.message ? ` (${error.message})` : ""}${hint}`, true);
    return;
  }
  for (const track of live.stream.getVideoTracks()) {
    track.addEventListener("ended", () => {  // unplugged, or taken by another app
      stopCamera();
      setStatus(status, "the camera stopped (unplugged or taken by another app?); press Start camera to try again", true);
    });
  }
  const video = $("video");
  // A short window (a phone on its side) shows the header and controls above the view: once the picture
  // has its size, the view and its status line are brought into sight (its lower part and the status
  // were off screen).
  video.addEventListener("resize", () => {
    if ($("status").getBoundingClientRect().bottom > window.innerHeight) video.parentElement.scrollIntoView({ block: "start" });
  }, { once: true });
  video.srcObject = live.stream;
  await video.play().catch(() => {});
  $("placeholder").hidden = true;
  $("stop").disabled = false;
  // Start is disabled now: keep the keyboard (and a screen reader) on the controls, without scrolling
  // back up to them (a short window has just brought the view into sight)
  $("stop").focus({ preventScroll: true });
  live.retries = 0;
  watchVideoFrames(video);
  connect();
  live.watchdog = setInterval(watchAnswers, 1000);
  requestAnimationFrame(drawLoop);
}

function watchVideoFrames(video) {
  // Count the frames the camera shows, so that each is sent once: answered faster than the camera
  // makes frames (18 ms a round trip, a 30 fps camera), the page sent each picture twice, doubling
  // the work of the recognizers other tabs share. Browsers without requestVideoFrameCallback send
  // as answers come, as before.
  live.sentVideoFrame = -1;
  live.waitingForFrame = false;
  if (!video.requestVideoFrameCallback) {
    live.frameWatch = null;
    return;
  }
  const watch = {};
  live.frameWatch = watch;
  const shown = (now, metadata) => {
    if (live.frameWatch !== watch || !live.stream) return;  // stopped, or a newer stream's counter runs
    live.videoFrames = metadata.presentedFrames;
    if (live.waitingForFrame) {
      live.waitingForFrame = false;
      sendFrame();
    }
    video.requestVideoFrameCallback(shown);
  };
  video.requestVideoFrameCallback(shown);
}

function stopCamera() {
  if (!live.stream) return;
  live.stream.getTracks().forEach((track) => track.stop());
  live.stream = null;
  clearTimeout(live.retry);
  clearInterval(live.watchdog);
  const socket = live.socket;
  live.socket = null;
  if (socket) socket.close(1000, "camera stopped");
  live.inFlight = false;
  $("video").srcObject = null;
  $("placeholder").hidden = false;
  $("start").disabled = false;
  $("stop").disabled = true;
  if (document.activeElement === $("stop") || document.activeElement === document.body) $("start").focus();
  clearResults();
  setStatus($("status"), "idle");
}

function clearResults() {
  live.faces = [];
  live.roundTrips = [];
  live.serverTimes = [];
  live.answeredAt = [];
  listFaces($("faces"), []);
  document.body.dataset.faces = "0";
  for (const id of ["latency", "server-ms", "fps"]) $(id).textContent = "–";
  drawOverlay();
}

function connect() {
  // One connection at a time: a retry timer left from a failure (Stop then Start while it waited) or
  // an older socket would otherwise open a second one, holding a server slot until the page closes.
  clearTimeout(live.retry);
  if (live.socket) {
    const old = live.socket;
    live.socket = null;
    old.close();
  }
  // Relative to the page, so the app also works mounted under a prefix (main.mount("/fer", create_app())).
  const url = new URL("ws", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  const socket = new WebSocket(url);
  live.socket = socket;
  live.inFlight = false;
  live.answeredHere = 0;
  if (!live.retries) setStatus($("status"), "connecting…");  // after a failure, its message stays up while retrying
  let opened = false;
  // A server that hangs (stopped, not gone) never finishes the handshake, and the browser waits minutes.
  const handshake = setTimeout(() => { if (socket.readyState === WebSocket.CONNECTING) socket.close(); }, HANDSHAKE_MS);
  socket.onopen = () => {
    // Not "live" yet: a busy server (1013) opens the socket and closes it at once, and a status that
    // said "live" between each retry's opening and closing was read out twice a retry. The first
    // answer says "live" (onReply); until then the last status stays.
    opened = true;
    clearTimeout(handshake);
    sendFrame();
  };
  socket.onmessage = (event) => {
    // Only an answer shows the server works: a busy server (1013) opens the socket and closes it at once.
    live.retries = 0;
    onReply(JSON.parse(event.data));
  };
  socket.onclose = async (event) => {
    clearTimeout(handshake);
    if (live.socket !== socket) return;  // stopped, or already replaced
    live.socket = null;
    live.inFlight = false;
    if (!live.stream) return;
    clearResults();  // the last reply's boxes would hover over a moving picture
    if (event.code === CLOSE_POLICY) {
      setStatus($("status"), `the server refused this page${event.reason ? `: ${event.reason}` : ""}`, true);
      return;
    }
    // 2 s after a connection that answered (an answer resets the count), then 4, 8, ... up to 30 s
    // while no connection answers: counting only connections that never answered waited 2 s twice.
    const wait = Math.min(RETRY_MAX_MS, RETRY_MS * 2 ** live.retries);
    let why = `${CLOSE_REASONS[event.code] || `closed (${event.code})`}${event.reason ? `: ${event.reason}` : ""}`;
    live.retries += 1;
    if (!opened) {
      // Refused before it opened: the browser gives no reason (always 1006). The page itself loads,
      // so ask the server whether it is there at all.
      const asking = new AbortController();  // a hung server would leave this question open for minutes
      const timer = setTimeout(() => asking.abort(), HANDSHAKE_MS);
      const answering = await fetch("api/health", { cache: "no-store", signal: asking.signal })
        .then((response) => response.ok, () => false).finally(() => clearTimeout(timer));
      if (!live.stream || live.socket) return;  // stopped or reconnected while asking
      why = answering
        ? "the server answers but refused the live connection (behind a proxy? it must pass on the Host header and the WebSocket upgrade)"
        : "the server does not answer (stopped, or the network is down)";
    }
    setStatus($("status"), `${why}; trying again in ${Math.round(wait / 1000)} s…`, true);
    live.retry = setTimeout(connect, wait);
  };
}

function watchAnswers() {
  // The display changes only when an answer comes: a hung server or a dead network link would leave
  // the last boxes and numbers on screen as if live. Say so, and after a while reconnect.
  const socket = live.socket;
  if (!live.stream || !socket || socket.readyState !== WebSocket.OPEN || !live.inFlight) return;
  const waited = performance.now() - live.sentAt;
  if (waited > GIVE_UP_MS) {
    socket.close(4000, "no answer");
    live.socket = null;
    live.inFlight = false;
    setStatus($("status"), `no answer from the server for ${Math.round(waited / 1000)} s; reconnecting…`, true);
    live.retries += 1;  // kept on screen ("connecting…" replaced it at once) until the new socket answers
    connect();
  } else if (waited > STALL_MS) {
    if (live.faces.length) clearResults();
    $("fps").textContent = "0.0";
    // One text for the whole wait: the status is read out at every change, and a count would be read each second.
    setStatus($("status"), `no answer from the server for over ${STALL_MS / 1000} s; waiting…`, true);
  }
}

function sendFrame() {
  const socket = live.socket;
  const video = $("video");
  if (!live.stream || !socket || socket.readyState !== WebSocket.OPEN || live.inFlight) return;
  if (document.hidden) {  // a hidden tab sends nothing (no one sees it); "visibilitychange" starts it again
    setStatus($("status"), "paused while the tab is hidden");
    return;
  }
  if (!video.videoWidth) {
    setTimeout(sendFrame, 50);  // the camera has not delivered a frame yet
    return;
  }
  if (live.frameWatch && live.videoFrames === live.sentVideoFrame) {
    live.waitingForFrame = true;  // this picture was sent: the camera's next one goes when it comes
    return;
  }
  live.sentVideoFrame = live.videoFrames;
  const width = Math.min(FRAME_WIDTH, video.videoWidth);
  const height = Math.round((video.videoHeight * width) / video.videoWidth);
  if (capture.width !== width || capture.height !== height) {
    capture.width = width;
    capture.height = height;
  }
  capture.getContext("2d").drawImage(video, 0, 0, width, height);
  live.inFlight = true;
  live.sentAt = performance.now();  // now, not only once encoded: the watchdog may look in between
  capture.toBlob((blob) => {
    if (live.socket !== socket) return;
    if (!blob || socket.readyState !== WebSocket.OPEN) {
      live.inFlight = false;
      setTimeout(sendFrame, 100);
      return;
    }
    live.sentAt = performance.now();
    socket.send(blob);
  }, "image/jpeg", JPEG_QUALITY);
}

function onReply(reply) {
  const now = performance.now();
  live.inFlight = false;
  live.faces = reply.faces;
  live.frame = { width: reply.width, height: reply.height };
  live.roundTrips.push(now - live.sentAt);
  live.serverTimes.push(reply.ms);
  if (live.roundTrips.length > 10) live.roundTrips.shift();
  if (live.serverTimes.length > 10) live.serverTimes.shift();  // the same frames as the round trip: a share of it
  live.answeredAt.push(now);
  while (live.answeredAt[0] < now - 2000) live.answeredAt.shift();

  const mean = (values) => values.reduce((sum, value) => sum + value, 0) / values.length;
  $("latency").textContent = `${Math.round(mean(live.roundTrips))} ms`;
  $("server-ms").textContent = `${Math.round(mean(live.serverTimes))} ms`;
  const span = live.answeredAt[live.answeredAt.length - 1] - live.answeredAt[0];
  if (live.answeredAt.length > 1 && span > 0) $("fps").textContent = (((live.answeredAt.length - 1) * 1000) / span).toFixed(1);
  // Listed left to right as the user sees them: in the mirrored view the face on the right of the image comes first.
  const mirrored = $("mirror").checked;
  listFaces($("faces"), [...reply.faces].sort((a, b) => (mirrored ? b.box[0] - a.box[0] : a.box[0] - b.box[0])));
  document.body.dataset.faces = String(reply.faces.length);
  document.body.dataset.frames = String(++live.answered);
  // The server shows a face once a second frame confirms it: a connection's first answer has none, and
  // "no face in view" was read out on every start and reconnect with faces in view.
  const empty = ++live.answeredHere < CONFIRM_FRAMES ? "live: looking for faces…" : "live: no face in view";
  setStatus($("status"), reply.faces.length ? `live: ${reply.faces.length} face${reply.faces.length > 1 ? "s" : ""}` : empty);
  sendFrame();
}

function drawOverlay() {
  const overlay = $("overlay");
  const ratio = window.devicePixelRatio || 1;
  const width = overlay.clientWidth;
  const height = overlay.clientHeight;
  if (overlay.width !== Math.round(width * ratio) || overlay.height !== Math.round(height * ratio)) {
    overlay.width = Math.round(width * ratio);
    overlay.height = Math.round(height * ratio);
  }
  const context = overlay.getContext("2d");
  context.setTransform(ratio, 0, 0, ratio, 0, 0);
  context.clearRect(0, 0, width, height);
  if (!live.stream) return;
  // The video is letterboxed (object-fit: contain) where the window is shorter than its picture, and
  // the stage can be taller than the video: the boxes go on the picture, not on either element's box.
  const video = $("video");
  const scale = Math.min(video.clientWidth / live.frame.width, video.clientHeight / live.frame.height);
  const shownWidth = live.frame.width * scale;
  const shownHeight = live.frame.height * scale;
  context.translate(video.offsetLeft + (video.clientWidth - shownWidth) / 2, video.offsetTop + (video.clientHeight - shownHeight) / 2);
  drawResults(context, live.faces, scale, { width: shownWidth, height: shownHeight }, $("mirror").checked, 1);
}

function drawLoop() {
  if (!live.stream) return;
  drawOverlay();
  requestAnimationFrame(drawLoop);
}

// --- Photo ---

let photoRequest = 0;  // the latest photo asked for: an answer for an earlier one is dropped
let lastPhoto = null;  // the latest photo file: sent again when "one cropped face" changes

async function predictPhoto(file) {
  const status = $("photo-status");
  if (!file) {
    setStatus(status, "that was not a file: choose or drop an image file", true);
    return;
  }
  const request = ++photoRequest;
  lastPhoto = file;
  setStatus(status, `sending ${file.name}…`);
  const url = URL.createObjectURL(file);
  const image = new Image();
  image.src = url;
  const shown = await image.decode().then(() => true, () => false);  // a TIFF may not display, yet the server reads it
  const body = new FormData();
  body.append("file", file, file.name);
  let response;
  let payload = {};
  try {
    const controller = new AbortController();  // not AbortSignal.timeout: Safari before 16 lacks it
    const timer = setTimeout(() => controller.abort(), UPLOAD_TIMEOUT_MS);
    const address = $("crops").checked ? "api/predict?crops=true" : "api/predict";
    response = await fetch(address, { method: "POST", body, signal: controller.signal }).finally(() => clearTimeout(timer));
    payload = await response.json().catch(() => ({}));
  } catch (error) {
    URL.revokeObjectURL(url);
    if (request !== photoRequest) return;
    clearPhoto();
    const why = error.name === "AbortError" ? `no answer in ${UPLOAD_TIMEOUT_MS / 1000} s (the server is stuck or overloaded)`
      : "the server did not answer (is fervid serve still running?)";
    setStatus(status, `${file.name}: upload failed: ${why}`, true);
    return;
  }
  URL.revokeObjectURL(url);
  if (request !== photoRequest) return;  // a photo chosen since has its own answer coming
  if (!response.ok) {
    // The server's message is written for API users: the page drops only the curl example, keeping the advice.
    const detail = typeof payload.detail === "string" ? payload.detail.split(": curl")[0].split(" (curl")[0] : response.statusText;
    // On the server's own page a 403 means a proxy changed the Host header the browser sent.
    const hint = response.status === 403 ? " (behind a proxy? it must pass on the browser's Host header)" : "";
    clearPhoto();
    setStatus(status, `${file.name}: ${response.status} ${detail}${hint}`, true);
    return;
  }
  shownPhoto = { payload, image: shown ? image : null };
  renderPhoto();
  listFaces($("photo-faces"), payload.faces);
  const count = payload.faces.length;
  // The server's note says why a small photo has no face (it may be a face already cropped).
  // With "one cropped face" ticked, its note says when the photo is hardly a face crop.
  const note = !payload.note ? "" : $("crops").checked ? ` (${payload.note})`
    : "; if the photo is one cropped face, tick \u201cone cropped face\u201d";
  setStatus(status, `${file.name}: ${count ? `${count} face${count > 1 ? "s" : ""}` : "no face found"} in ${payload.width}×${payload.height}, ${Math.round(payload.ms)} ms on the server${note}`);
}

let shownPhoto = null;  // the photo on show and its answer: drawn again when the view changes size

function renderPhoto() {
  // Labels and bars are sized in CSS pixels of the view, so a resize (a phone turned) redraws them.
  if (!shownPhoto) return;
  const { payload, image } = shownPhoto;
  const canvas = $("photo");
  // As many pixels as the photo has (up to PHOTO_WIDTH), and at least as many as the screen shows it
  // on: a 160 px photo drawn at its own size was stretched 3-6 times, its labels blurred blocks.
  const maxHeight = parseFloat(getComputedStyle(canvas).maxHeight) || Infinity;
  const shownWidth = Math.min(canvas.parentElement.clientWidth, (maxHeight * payload.width) / payload.height);
  const onScreen = (shownWidth * (window.devicePixelRatio || 1)) / payload.width;
  const scale = Math.max(Math.min(1, PHOTO_WIDTH / payload.width), onScreen || 0);
  canvas.width = Math.round(payload.width * scale);
  canvas.height = Math.round(payload.height * scale);
  const context = canvas.getContext("2d");
  if (image) {
    context.fillStyle = "#fff";  // transparent parts on white, as the server reads them (the stage is black)
    context.fillRect(0, 0, canvas.width, canvas.height);
    context.drawImage(image, 0, 0, canvas.width, canvas.height);
  } else {
    context.fillStyle = "#222";
    context.fillRect(0, 0, canvas.width, canvas.height);
  }
  const rect = canvas.getBoundingClientRect();  // the picture is letterboxed (object-fit: contain) in a short window
  const shownScale = Math.min(rect.width / canvas.width, rect.height / canvas.height) || 1;
  drawResults(context, payload.faces, scale, { width: canvas.width, height: canvas.height }, false, 1 / shownScale);
}

function clearPhoto() {
  shownPhoto = null;
  const canvas = $("photo");
  canvas.width = 0;
  canvas.height = 0;
  listFaces($("photo-faces"), []);
}

// --- Wiring ---

const NO_CAMERA_HERE = "browsers give the camera only to pages on localhost or HTTPS: on the machine running fervid open "
  + `http://127.0.0.1:${location.port || 80}; from another machine, serve it over HTTPS (see docs/web.md). Photos work here.`;

function cameraAllowedHere() {
  return Boolean(window.isSecureContext && navigator.mediaDevices && navigator.mediaDevices.getUserMedia);
}

if (!cameraAllowedHere()) {  // said before anyone presses a button that cannot work
  $("start").disabled = true;
  setStatus($("status"), NO_CAMERA_HERE, true);
}

$("start").addEventListener("click", startCamera);
$("stop").addEventListener("click", stopCamera);
$("mirror").addEventListener("change", (event) => $("video").classList.toggle("mirrored", event.target.checked));
$("video").classList.toggle("mirrored", $("mirror").checked);
$("file").addEventListener("change", (event) => {
  const file = event.target.files[0];
  event.target.value = "";  // choosing the same file again is a new upload, not "no change"
  if (file) predictPhoto(file);
});
$("crops").addEventListener("change", () => { if (lastPhoto) predictPhoto(lastPhoto); });  // the photo on show, read the other way

const photoPanel = $("photo-panel");
photoPanel.addEventListener("dragover", (event) => {
  event.preventDefault();
  photoPanel.classList.add("dragging");
});
photoPanel.addEventListener("dragleave", () => photoPanel.classList.remove("dragging"));
photoPanel.addEventListener("drop", (event) => {
  event.preventDefault();
  photoPanel.classList.remove("dragging");
  predictPhoto(event.dataTransfer.files[0]);
});
document.addEventListener("visibilitychange", () => {
  if (document.hidden && live.stream && live.socket && !live.inFlight) setStatus($("status"), "paused while the tab is hidden");
  if (!document.hidden) sendFrame();
});
window.addEventListener("resize", renderPhoto);
// A file dropped anywhere else would make the browser open it in place of the page, camera and all.
for (const type of ["dragover", "drop"]) document.addEventListener(type, (event) => event.preventDefault());

fetch("api/model")
  .then((response) => response.json())
  .then((card) => { $("model").textContent = `model: ${card.name} ${card.version}`; })
  .catch(() => {});
