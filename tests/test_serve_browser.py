"""The page in real headless Chromium: a fake webcam playing dataset faces -> boxes and expressions on screen.

Chromium reads the fake camera from a .y4m file the test writes; Playwright drives Debian's
Chromium on the PATH (no `playwright install`). Set FERVID_UPDATE_SCREENSHOT=1 to refresh docs/images/web.png.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

CHROMIUM = Path(shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium")  # as .ci/run finds it
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "images" / "web.png"

pytest.importorskip("fastapi", reason="the web server needs the 'serve' extra: pip install -e '.[serve]'")
sync_api = pytest.importorskip("playwright.sync_api", reason="the browser test needs Playwright: pip install -e '.[test]'")
if not CHROMIUM.is_file():
    pytest.skip("the browser test needs Chromium on the PATH (apt-get install chromium)", allow_module_level=True)

from conftest import detectable_faces, paste_face, textured_background  # noqa: E402
from fervid.labels import EXPRESSIONS  # noqa: E402
from fervid.serve import create_app  # noqa: E402
from fervid.serve.server import running_server  # noqa: E402

WIDTH, HEIGHT, FACE_SIDE = 640, 480, 150


def write_y4m(path: Path, frames: list[np.ndarray], fps: int = 15) -> Path:
    """BGR frames as a YUV4MPEG2 file (4:2:0), the fake camera Chromium plays in a loop.

    Chromium reads the planes as limited-range BT.601 whatever the header says (a gray of 20 written
    full-range came back from a canvas as 5), so the values are scaled to 16-235 / 16-240 here and
    the page sees the frames' own gray levels.
    """
    height, width = frames[0].shape[:2]
    with open(path, "wb") as stream:
        stream.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames:
            planes = cv2.cvtColor(frame, cv2.COLOR_BGR2YCrCb).astype(np.float32)
            planes[..., 0] = 16 + planes[..., 0] * (219 / 255)
            planes[..., 1:] = 128 + (planes[..., 1:] - 128) * (224 / 255)
            luma, red_chroma, blue_chroma = cv2.split(np.round(planes).astype(np.uint8))
            half = (width // 2, height // 2)
            stream.write(b"FRAME\n")
            stream.write(luma.tobytes())
            stream.write(cv2.resize(blue_chroma, half, interpolation=cv2.INTER_AREA).tobytes())
            stream.write(cv2.resize(red_chroma, half, interpolation=cv2.INTER_AREA).tobytes())
    return path


def webcam_frames(faces: list[np.ndarray], count: int = 4) -> list[np.ndarray]:
    """640x480 frames with two faces, one high left and one low right, swaying 2 pixels a frame.

    At these places (and this background) the detector finds exactly the two faces in every frame
    after JPEG compression, so the screenshot shows no stray box.
    """
    background = textured_background(HEIGHT, WIDTH, seed=3)
    frames = []
    for index in range(count):
        frame = background.copy()
        for face, (x, y) in zip(faces, [(60, 50), (430, 270)]):
            paste_face(frame, face, x + 2 * index, y, FACE_SIDE)
        frames.append(frame)
    return frames


@pytest.fixture(scope="module")
def server_url():
    with running_server(create_app()) as url:
        yield url


def launch(playwright, camera: Path):
    """Headless Chromium whose fake webcam plays ``camera`` (a .y4m file) in a loop."""
    args = [
        "--no-sandbox", "--headless", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={camera}", "--disable-background-networking", "--disable-component-update",
        "--disable-gpu",
    ]
    return playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=args)


@pytest.fixture(scope="module")
def playwright():
    with sync_api.sync_playwright() as running:
        yield running


@pytest.fixture(scope="module")
def browser(playwright, tmp_path_factory: pytest.TempPathFactory):
    browser = launch(playwright, write_y4m(tmp_path_factory.mktemp("camera") / "camera.y4m", webcam_frames(detectable_faces(2))))
    try:
        yield browser
    finally:
        browser.close()


def open_page(browser, url: str):
    """A new tab on the app; returns it and the list that collects its JavaScript errors."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.goto(url)
    return page, errors


def painted_pixels(page, selector: str) -> int:
    """How many pixels of a canvas are not transparent (something was drawn on it)."""
    return page.evaluate(
        """selector => {
            const canvas = document.querySelector(selector);
            const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
            let painted = 0;
            for (let i = 3; i < data.length; i += 4) if (data[i]) painted++;
            return painted;
        }""",
        selector,
    )


def test_webcam_and_photo_show_faces_with_expressions(browser, server_url: str, tmp_path: Path) -> None:
    page, errors = open_page(browser, server_url)
    page.click("#start")
    page.wait_for_selector("#faces li[data-expression]", timeout=40_000)
    # The camera shows two faces, found in every frame: both get a line (not just one of them).
    page.wait_for_function("() => document.querySelectorAll('#faces li[data-expression]').length === 2", timeout=20_000)
    expressions = page.eval_on_selector_all("#faces li", "items => items.map(item => item.dataset.expression)")
    assert len(expressions) == 2 and set(expressions) <= set(EXPRESSIONS)
    assert page.text_content("#faces li .label").split()[0] in EXPRESSIONS
    page.wait_for_function("() => Number(document.body.dataset.frames) >= 3", timeout=30_000)
    assert page.text_content("#latency").endswith(" ms") and float(page.text_content("#fps")) > 0
    assert page.text_content("#status").startswith("live")
    assert painted_pixels(page, "#overlay") > 1000  # boxes, labels and bars drawn over the video

    photo = textured_background(360, 480, seed=0)
    paste_face(photo, detectable_faces(1)[0], (480 - 130) // 2, (360 - 130) // 2, 130)
    ok, png = cv2.imencode(".png", photo)
    page.set_input_files("#file", files=[{"name": "face.png", "mimeType": "image/png", "buffer": png.tobytes()}])
    page.wait_for_selector("#photo-faces li[data-expression]", timeout=20_000)
    assert page.text_content("#photo-status").startswith("face.png: 1 face in 480×360")

    page.wait_for_selector("#faces li[data-expression]")  # a frame without a face in view may just have passed
    page.screenshot(path=tmp_path / "web.png", full_page=True)
    if os.environ.get("FERVID_UPDATE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tmp_path / "web.png", SCREENSHOT)
    assert errors == []
    page.close()


def test_each_camera_frame_is_sent_once_and_small_or_transparent_photos_are_drawn_sharp_on_white(browser, server_url: str) -> None:
    """Answered faster than the camera made frames, the page sent each picture again (50 frames a
    second from a 15 fps camera here); a 160 px photo was drawn at 160 px and stretched, its labels
    blurred blocks; a transparent photo showed the stage's black where the server reads white."""
    page, errors = open_page(browser, server_url)
    page.click("#start")
    page.wait_for_function("() => Number(document.body.dataset.frames) >= 3", timeout=40_000)
    start = page.evaluate("[Number(document.body.dataset.frames), performance.now()]")
    page.wait_for_timeout(3000)
    end = page.evaluate("[Number(document.body.dataset.frames), performance.now()]")
    rate = (end[0] - start[0]) * 1000 / (end[1] - start[1])  # one answer per frame sent
    assert 0 < rate <= 15 * 1.25, f"{rate:.1f} frames a second sent from a 15 fps camera"
    page.click("#stop")

    small = np.zeros((160, 160, 4), np.uint8)  # a transparent photo: a face in the middle, nothing around it
    small[16:144, 16:144, :3] = cv2.cvtColor(cv2.resize(detectable_faces(1)[0], (128, 128)), cv2.COLOR_GRAY2BGR)
    small[16:144, 16:144, 3] = 255
    page.set_input_files("#file", files=[{"name": "small.png", "mimeType": "image/png", "buffer": cv2.imencode(".png", small)[1].tobytes()}])
    page.wait_for_function("() => document.querySelector('#photo-status').textContent.includes('on the server')", timeout=20_000)
    bitmap, shown = page.eval_on_selector("#photo", "canvas => [canvas.width, canvas.getBoundingClientRect().width * devicePixelRatio]")
    assert bitmap >= shown - 1 and bitmap > 160, (bitmap, shown)
    corner = page.eval_on_selector("#photo", "canvas => Array.from(canvas.getContext('2d').getImageData(2, 2, 1, 1).data)")
    assert corner == [255, 255, 255, 255], corner
    assert errors == []
    page.close()


def test_two_tabs_are_served_at_once(browser, server_url: str) -> None:
    tabs = [open_page(browser, server_url) for _ in range(2)]
    for page, _ in tabs:
        page.click("#start")
    for page, errors in tabs:
        page.wait_for_function("() => Number(document.body.dataset.frames) >= 3", timeout=40_000)
        assert errors == []
    for page, _ in tabs:  # both keep getting answers, neither starves the other
        before = int(page.evaluate("document.body.dataset.frames"))
        page.wait_for_function(f"() => Number(document.body.dataset.frames) > {before}", timeout=20_000)
        page.close()


def test_the_photo_panel_uploads_a_file_chosen_again_and_clears_on_an_error(browser, server_url: str) -> None:
    page, _ = open_page(browser, server_url)
    exceptions: list[str] = []
    page.on("pageerror", lambda error: exceptions.append(str(error)))
    uploads: list[str] = []
    page.on("request", lambda request: uploads.append(request.url) if request.url.endswith("/api/predict") else None)
    photo = textured_background(360, 480, seed=0)
    paste_face(photo, detectable_faces(1)[0], (480 - 130) // 2, (360 - 130) // 2, 130)
    face = {"name": "face.png", "mimeType": "image/png", "buffer": cv2.imencode(".png", photo)[1].tobytes()}
    for attempt in (1, 2):  # the same file again is a new upload (browsers fire no change event for it otherwise)
        page.set_input_files("#file", files=[face])
        page.wait_for_function("() => document.querySelector('#photo-status').textContent.includes('on the server')",
                               timeout=20_000)
        assert len(uploads) == attempt
    assert page.eval_on_selector("#photo", "canvas => canvas.width") > 0

    page.set_input_files("#file", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not a photo"}])
    page.wait_for_selector("#photo-status.error", timeout=20_000)
    status = page.text_content("#photo-status")
    assert status.startswith("notes.txt: 415 ") and "curl" not in status  # the API's curl hint is not for page users
    assert page.eval_on_selector("#photo", "canvas => canvas.width") == 0, "the last photo is not left as if it were the answer"
    assert page.eval_on_selector_all("#photo-faces li", "items => items.length") == 0

    page.focus("#start")
    reached = []
    for _ in range(8):  # the photo picker is in the tab order
        page.keyboard.press("Tab")
        reached.append(page.evaluate("document.activeElement.id"))
    assert "file" in reached, reached
    assert exceptions == []
    page.close()


def test_a_camera_that_stops_ends_the_session_with_a_message(browser, server_url: str) -> None:
    page, errors = open_page(browser, server_url)
    page.click("#start")
    page.wait_for_function("() => Number(document.body.dataset.frames) >= 1", timeout=40_000)
    page.evaluate("live.stream.getVideoTracks()[0].dispatchEvent(new Event('ended'))")  # as when it is unplugged
    page.wait_for_selector("#status.error", timeout=10_000)
    assert page.text_content("#status").startswith("the camera stopped")
    assert page.is_enabled("#start") and page.is_disabled("#stop")
    assert page.eval_on_selector_all("#faces li", "items => items.length") == 0
    assert errors == []
    page.close()


def test_a_face_at_the_right_edge_keeps_its_whole_label(browser, server_url: str) -> None:
    """On a narrow view (a phone) a face near the right edge showed "angry 4": the label is moved
    left to fit, so it paints as many pixels there as in the middle of the view (within the few that
    antialiasing at another sub-pixel offset changes; cut off at the edge it would paint a quarter)."""
    page, errors = open_page(browser, server_url)
    painted = page.evaluate(
        """() => {
            const count = (x) => {
                const canvas = document.createElement("canvas");
                canvas.width = 240; canvas.height = 120;
                const context = canvas.getContext("2d");
                const face = {box: [x, 60, 40, 40], expression: "surprise", confidence: 0.49, probabilities: {}};
                drawResults(context, [face], 1, {width: 240, height: 120}, false, 1);
                const data = context.getImageData(0, 0, 240, 58).data;  // above the box: the label alone
                let painted = 0;
                for (let i = 3; i < data.length; i += 4) if (data[i]) painted++;
                return painted;
            };
            return [count(60), count(215)];
        }"""
    )
    middle, edge = painted
    assert middle > 500 and abs(edge - middle) <= 0.02 * middle, painted
    assert errors == []
    page.close()


def test_a_server_that_stops_answering_is_said_and_its_boxes_cleared(browser, server_url: str) -> None:
    """A hung server or a dead link never closes the socket: the page must not go on showing the last
    answer as live. Frames are dropped on the way here (send does nothing), as a stalled network does."""
    page, errors = open_page(browser, server_url)
    page.focus("#start")
    page.keyboard.press("Enter")
    page.wait_for_selector("#faces li[data-expression]", timeout=40_000)
    assert page.evaluate("document.activeElement.id") == "stop", "the keyboard focus moves to Stop, not the page"
    page.evaluate("live.socket.send = () => {}")  # the next frames vanish
    page.wait_for_function("() => document.querySelector('#status').textContent.startsWith('no answer from the server')",
                           timeout=15_000)
    assert page.eval_on_selector_all("#faces li", "items => items.length") == 0 and page.text_content("#fps") == "0.0"
    assert painted_pixels(page, "#overlay") == 0
    page.keyboard.press("Enter")  # Stop: the focus goes back to Start
    assert page.evaluate("document.activeElement.id") == "start" and page.text_content("#status") == "idle"
    assert errors == []
    page.close()


def test_a_live_connection_refused_at_the_handshake_is_explained(browser, server_url: str) -> None:
    """A proxy that does not pass on the Host header gets the WebSocket refused with 403 before it
    opens: the browser only reports 1006. The page asks /api/health and says what is wrong."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.add_init_script("""
        window.WebSocket = class extends EventTarget {
            static OPEN = 1;
            constructor() { super(); this.readyState = 0; setTimeout(() => { this.readyState = 3; this.onclose({ code: 1006, reason: "" }); }, 50); }
            send() {}
            close() {}
        };
    """)
    page.goto(server_url)
    page.click("#start")
    page.wait_for_function("() => document.querySelector('#status').textContent.includes('refused the live connection')", timeout=20_000)
    assert "must pass on the Host header" in page.text_content("#status") and "trying again in" in page.text_content("#status")
    page.close()


def test_without_a_secure_context_the_camera_button_is_off_and_says_why(browser, server_url: str) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.add_init_script("Object.defineProperty(window, 'isSecureContext', { get: () => false })")  # as on http://192.168.x.y
    page.goto(server_url)
    assert page.is_disabled("#start")
    status = page.text_content("#status")
    assert status.startswith("browsers give the camera only to pages on localhost or HTTPS") and "Photos work here" in status
    page.close()


def test_an_upload_to_a_server_that_is_gone_says_so(browser, server_url: str, tmp_path: Path) -> None:
    page, _ = open_page(browser, server_url)
    page.route("**/api/predict", lambda route: route.abort("connectionrefused"))  # as when fervid serve has stopped
    photo = tmp_path / "face.png"
    cv2.imwrite(str(photo), textured_background(120, 160))
    page.set_input_files("#file", str(photo))
    page.wait_for_selector("#photo-status.error", timeout=20_000)
    assert page.text_content("#photo-status") == "face.png: upload failed: the server did not answer (is fervid serve still running?)"
    page.close()


def test_the_live_view_fits_a_short_window_and_its_boxes_stay_on_the_faces(browser, server_url: str) -> None:
    """On a phone turned sideways (844x390) the view was 775x581 CSS pixels, the lower face and the
    status off screen: it is letterboxed into the window, and the boxes are drawn on the picture."""
    page = browser.new_page(viewport={"width": 844, "height": 390})
    page.goto(server_url)
    page.click("#start")
    page.wait_for_function("() => live.faces.length === 2", timeout=40_000)
    video = page.eval_on_selector("#video", "video => video.getBoundingClientRect().height")
    assert video <= 0.8 * 390 + 1, video
    inside = page.evaluate(
        """() => {
            drawOverlay();  // from the faces read below: the drawing loop may be a reply behind
            const video = document.querySelector("#video"), overlay = document.querySelector("#overlay");
            const scale = Math.min(video.clientWidth / live.frame.width, video.clientHeight / live.frame.height);
            const left = video.offsetLeft + (video.clientWidth - live.frame.width * scale) / 2;
            const top = video.offsetTop + (video.clientHeight - live.frame.height * scale) / 2;
            const ratio = window.devicePixelRatio || 1;
            const pixels = overlay.getContext("2d").getImageData(0, 0, overlay.width, overlay.height);
            return live.faces.map((face) => {  // the middle of each box's left edge is painted
                let [x, y, w, h] = face.box.map((value) => value * scale);
                if (document.querySelector("#mirror").checked) x = live.frame.width * scale - x - w;
                const px = Math.round((left + x) * ratio), py = Math.round((top + y + h / 2) * ratio);
                return pixels.data[(py * overlay.width + px) * 4 + 3] > 0;
            });
        }"""
    )
    assert inside == [True, True], inside
    page.close()


def test_a_photo_is_drawn_again_when_the_view_changes_size_and_a_small_ones_note_is_shown(browser, server_url: str) -> None:
    """A photo shown at 1280 px kept its labels and bars sized for it after the window became a
    phone's (labels 7 px tall, bars where the docs promise none); and a 48x48 face's server note,
    that it may be a cropped face, was dropped."""
    page, errors = open_page(browser, server_url)
    photo = webcam_frames(detectable_faces(2), count=1)[0]
    page.set_input_files("#file", files=[{"name": "two.png", "mimeType": "image/png", "buffer": cv2.imencode(".png", photo)[1].tobytes()}])
    page.wait_for_selector("#photo-faces li[data-expression]", timeout=20_000)
    page.evaluate("""() => {
        window.units = [];
        const original = drawResults;
        drawResults = (...args) => { units.push(args[5]); return original(...args); };
    }""")
    page.set_viewport_size({"width": 360, "height": 740})
    page.wait_for_function("() => units.length > 0", timeout=10_000)
    width = page.eval_on_selector("#photo", "canvas => canvas.getBoundingClientRect().width")
    assert page.evaluate("units[units.length - 1]") == pytest.approx(640 / width, rel=0.05)

    face48 = cv2.imencode(".png", cv2.resize(detectable_faces(1)[0], (48, 48)))[1].tobytes()
    page.set_input_files("#file", files=[{"name": "face48.png", "mimeType": "image/png", "buffer": face48}])
    page.wait_for_function("() => document.querySelector('#photo-status').textContent.startsWith('face48.png:')", timeout=20_000)
    assert page.text_content("#photo-status").endswith("; if the photo is one cropped face, tick \u201cone cropped face\u201d")
    # Ticked, the photo on show is sent again as one face (the API's ?crops=true), which the page could not ask for.
    page.check("#crops")
    page.wait_for_selector("#photo-faces li[data-expression]", timeout=20_000)
    assert page.text_content("#photo-status").startswith("face48.png: 1 face in 48×48")
    assert errors == []
    page.close()


def test_a_hidden_tab_sends_no_frames_until_it_is_shown(browser, server_url: str) -> None:
    page, errors = open_page(browser, server_url)
    page.click("#start")
    page.wait_for_function("() => Number(document.body.dataset.frames) >= 2", timeout=40_000)
    page.evaluate("""() => {
        Object.defineProperty(document, "hidden", { configurable: true, get: () => true });
        document.dispatchEvent(new Event("visibilitychange"));
    }""")
    page.wait_for_function("() => !live.inFlight", timeout=20_000)  # a frame in flight is still answered
    paused = int(page.evaluate("document.body.dataset.frames"))
    page.wait_for_timeout(1500)
    assert int(page.evaluate("document.body.dataset.frames")) == paused
    assert page.text_content("#status") == "paused while the tab is hidden"
    page.evaluate("""() => {
        Object.defineProperty(document, "hidden", { configurable: true, get: () => false });
        document.dispatchEvent(new Event("visibilitychange"));
    }""")
    page.wait_for_function(f"() => Number(document.body.dataset.frames) > {paused}", timeout=20_000)
    assert errors == []
    page.close()


def test_a_busy_server_that_closes_right_after_opening_is_retried_ever_more_slowly(browser, server_url: str) -> None:
    """A 1013 close right after the socket opened reset the count: the page retried every 2 s for ever."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.add_init_script("""
        window.WebSocket = class extends EventTarget {
            static OPEN = 1; static CONNECTING = 0;
            constructor() {
                super(); this.readyState = 0;
                setTimeout(() => { this.readyState = 1; this.onopen(); }, 20);
                setTimeout(() => { this.readyState = 3; this.onclose({ code: 1013, reason: "too many live streams" }); }, 60);
            }
            send() {}
            close() {}
        };
    """)
    page.add_init_script(STATUS_LOG)
    page.goto(server_url)
    page.click("#start")
    page.wait_for_function("() => document.querySelector('#status').textContent.includes('trying again in 2 s')", timeout=20_000)
    page.wait_for_function("() => document.querySelector('#status').textContent.includes('trying again in 4 s')", timeout=20_000)
    assert page.text_content("#status").startswith("the server is busy: too many live streams")
    # a screen reader read "live" between each retry's opening and its close: no stream ever ran
    assert not [status for status in page.evaluate("window.statuses") if status.startswith("live")]
    page.close()


# Every text the status element shows, in order (a screen reader reads each change).
STATUS_LOG = """
    window.statuses = [];
    document.addEventListener("DOMContentLoaded", () => {
        const status = document.querySelector("#status");
        new MutationObserver(() => window.statuses.push(status.textContent))
            .observe(status, { childList: true, characterData: true, subtree: true });
    });
"""


def test_after_a_live_stream_drops_the_waits_double_from_2_s(browser, server_url: str) -> None:
    """After a stream that had answered dropped, the page waited 2 s, then 2 s again, then 4, 8:
    the first failed retry did not count."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.add_init_script("""
        let made = 0;
        window.WebSocket = class extends EventTarget {
            static OPEN = 1; static CONNECTING = 0;
            constructor() {
                super(); this.readyState = 0;
                if (made++ === 0) {  // the first answers a frame, then drops
                    setTimeout(() => { this.readyState = 1; this.onopen(); }, 20);
                    setTimeout(() => this.onmessage({ data: JSON.stringify({ faces: [], width: 640, height: 480, ms: 5 }) }), 40);
                    setTimeout(() => { this.readyState = 3; this.onclose({ code: 1006, reason: "" }); }, 80);
                } else {  // the later ones are refused, as by a server that is gone
                    setTimeout(() => { this.readyState = 3; this.onclose({ code: 1006, reason: "" }); }, 20);
                }
            }
            send() {}
            close() {}
        };
    """)
    page.add_init_script(STATUS_LOG)
    page.goto(server_url)
    page.click("#start")
    page.wait_for_function("() => document.querySelector('#status').textContent.includes('trying again in 4 s')", timeout=20_000)
    waits = [int(found) for status in page.evaluate("window.statuses") for found in re.findall(r"trying again in (\d+) s", status)]
    assert waits[:2] == [2, 4], page.evaluate("window.statuses")
    page.close()


def test_a_panel_of_bars_is_placed_where_it_covers_no_other_face(browser, server_url: str) -> None:
    """Two faces side by side: the left one's bars went to its right, over the other face."""
    page, errors = open_page(browser, server_url)
    panels = page.evaluate(
        """() => {
            const canvas = document.createElement("canvas");
            canvas.width = 600; canvas.height = 300;
            const context = canvas.getContext("2d");
            const placed = [];
            const original = drawBars;
            drawBars = (...args) => { const rect = original(...args); placed.push(rect); return rect; };
            const face = (x, y) => ({box: [x, y, 100, 100], expression: "happy", confidence: 0.6, probabilities: {happy: 0.6}});
            // side by side, and a third low in the view, where only "above" fits and must clear its label
            drawResults(context, [face(40, 40), face(170, 40), face(420, 190)], 1, {width: 600, height: 300}, false, 1);
            drawBars = original;
            return placed;
        }"""
    )
    faces = [[40, 18, 100, 122], [170, 18, 100, 122], [420, 168, 100, 122]]  # each box with its 22-pixel label above

    def overlap(a, b) -> bool:
        return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]

    assert len(panels) == 3
    assert not any(overlap(panel, face) for panel in panels for face in faces), panels
    assert not any(overlap(a, b) for i, a in enumerate(panels) for b in panels[i + 1:])
    assert all(0 <= panel[0] and panel[0] + panel[2] <= 600 and 0 <= panel[1] and panel[1] + panel[3] <= 300 for panel in panels)

    # A label wider than its face ("surprise 100%" over a 43-pixel box) reaching past the next face:
    # the bars of that face went over it, the label taken as wide as its box.
    drawn = page.evaluate(
        """() => {
            const canvas = document.createElement("canvas");
            canvas.width = 640; canvas.height = 480;
            const context = canvas.getContext("2d");
            const labels = [], placed = [];
            const fill = context.fillRect.bind(context);
            context.fillRect = (...rect) => { if (!placed.length) labels.push(rect); fill(...rect); };
            const original = drawBars;
            drawBars = (...args) => { placed.push(args[2]); return original(...args); };
            const face = (box, expression, confidence) => ({box, expression, confidence, probabilities: {[expression]: confidence}});
            drawResults(context, [face([251, 220, 43, 43], "surprise", 1.0), face([280, 196, 60, 60], "happy", 0.9)],
                        1, {width: 640, height: 480}, false, 1);
            drawBars = original;
            return {labels, placed};
        }"""
    )
    assert len(drawn["labels"]) == 2 and drawn["labels"][0][2] > 43 + 60, drawn  # wider than its box, past the other face
    assert not any(overlap(panel, label) for panel in drawn["placed"] for label in drawn["labels"]), drawn
    assert not errors
    assert errors == []
    page.close()


def test_on_a_phone_every_control_can_be_tapped_and_a_sideways_view_fits_with_its_status(browser, server_url: str) -> None:
    """At 667x375 (a phone on its side) the view ran 80 px off the bottom of the screen, its status
    with it; on touch screens the buttons were 32 px tall, the checkbox 13 px, the footer links 16."""
    context = browser.new_context(viewport={"width": 667, "height": 375}, device_scale_factor=2, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.goto(server_url)
    small = page.evaluate("""() => [...document.querySelectorAll("button, label, footer a")]
        .filter((element) => element.offsetParent !== null)
        .map((element) => [element.textContent.trim() || element.id, element.getBoundingClientRect()])
        .filter(([, box]) => box.width < 44 || box.height < 44)
        .map(([name, box]) => `${name}: ${Math.round(box.width)}x${Math.round(box.height)}`)""")
    assert small == []
    box = page.eval_on_selector("#mirror", "box => box.getBoundingClientRect().height")
    assert box >= 24, box
    page.click("#start")
    page.wait_for_function("() => live.faces.length === 2", timeout=40_000)
    bottoms = page.evaluate("""() => [document.querySelector("#video").getBoundingClientRect().bottom,
        document.querySelector("#status").getBoundingClientRect().bottom, window.innerHeight]""")
    assert bottoms[0] <= bottoms[2] and bottoms[1] <= bottoms[2], bottoms
    context.close()


def test_the_status_never_says_no_face_while_the_first_answer_waits_to_confirm_one(browser, server_url: str) -> None:
    """The server shows a face from its second frame: each start and reconnect said "live: no face in
    view" (read out by screen readers) before "live: 2 faces"."""
    page, errors = open_page(browser, server_url)
    page.evaluate("""() => {
        window.said = [];
        new MutationObserver(() => said.push(document.querySelector("#status").textContent))
            .observe(document.querySelector("#status"), { childList: true, characterData: true, subtree: true });
    }""")
    page.click("#start")
    page.wait_for_function("() => said.includes('live: 2 faces')", timeout=40_000)
    said = page.evaluate("said")
    assert "live: no face in view" not in said, said
    assert said.index("live: looking for faces…") < said.index("live: 2 faces"), said
    assert errors == []
    page.close()


def test_a_camera_that_gives_portrait_pictures_is_shown_whole(playwright, server_url: str, tmp_path: Path) -> None:
    """Asked for 640x480, Chromium cropped a portrait-only camera's 480x640 picture to a 480x480 square:
    the faces near its top and bottom were cut away and the page said "no face in view" for good."""
    frames = []
    for index in range(4):
        frame = textured_background(640, 480, seed=3)
        for face, (x, y) in zip(detectable_faces(2), [(40, 20), (290, 470)]):  # in the parts a square crop cuts off
            paste_face(frame, face, x + 2 * index, y, FACE_SIDE)
        frames.append(frame)
    browser = launch(playwright, write_y4m(tmp_path / "portrait.y4m", frames))
    try:
        page = browser.new_page(viewport={"width": 375, "height": 667})
        page.goto(server_url)
        page.click("#start")
        page.wait_for_function("() => live.faces.length === 2", timeout=40_000)
        assert page.evaluate("[live.frame.width, live.frame.height]") == [480, 640]
    finally:
        browser.close()
