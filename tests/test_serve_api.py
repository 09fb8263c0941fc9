"""The web server's REST API and frame WebSocket (TestClient), bad inputs included, and its load test."""

from __future__ import annotations

import builtins
import contextlib
import io
import json
import re
import tempfile
import threading
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

import fervid

pytest.importorskip("fastapi", reason="the web server needs the 'serve' extra: pip install -e '.[serve]'")

from fastapi.testclient import TestClient  # noqa: E402
from starlette.websockets import WebSocketDisconnect  # noqa: E402

from conftest import detectable_faces, exif_oriented_jpeg, fer2013_zip, paste_face, textured_background  # noqa: E402
from fervid.errors import FervidError  # noqa: E402
from fervid.labels import EXPRESSIONS  # noqa: E402
from fervid.runtime.classify import DEFAULT_MODEL  # noqa: E402
from fervid.serve import create_app  # noqa: E402
from fervid.serve.guards import ANY_HOST, LOCAL_HOSTS, allowed_hosts_for  # noqa: E402
from fervid.serve.pool import LiveStream, RecognizerPool  # noqa: E402
from fervid.serve.app import STATIC  # noqa: E402

MAX_UPLOAD = 2_000_000
MAX_FRAME = 1_000_000


@pytest.fixture(scope="module")
def client():
    # TestClient names the server "testserver"; the default Host allow-list is tested on its own below
    with TestClient(create_app(max_upload_bytes=MAX_UPLOAD, max_frame_bytes=MAX_FRAME, allowed_hosts=[*LOCAL_HOSTS, "testserver"])) as client:
        yield client


def face_photo() -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A 480x360 BGR photo with one real FER2013 face at a place the detector is known to find it."""
    photo = textured_background(360, 480, seed=0)
    box = paste_face(photo, detectable_faces(1)[0], (480 - 130) // 2, (360 - 130) // 2, 130)
    return photo, box


def encoded(image: np.ndarray, suffix: str = ".png", *options: int) -> bytes:
    ok, data = cv2.imencode(suffix, image, list(options))
    assert ok
    return data.tobytes()


def assert_face_result(face: dict, truth: tuple[int, int, int, int], tracked: bool = False) -> None:
    """A box near the pasted face, one of the seven expressions, probabilities in class order summing to 1."""
    x, y, w, h = face["box"]
    assert abs(x - truth[0]) < 30 and abs(y - truth[1]) < 30 and 0.7 < w / truth[2] < 1.4, face["box"]
    assert face["expression"] in EXPRESSIONS
    assert list(face["probabilities"]) == list(EXPRESSIONS)
    assert sum(face["probabilities"].values()) == pytest.approx(1.0, abs=2e-3)
    assert face["confidence"] == face["probabilities"][face["expression"]]
    if tracked:  # a stream holds its label through near ties: within label_margin (0.1) of the most probable
        assert face["confidence"] >= max(face["probabilities"].values()) - 0.1
    else:
        assert face["expression"] == max(face["probabilities"], key=face["probabilities"].get)
    assert (face["track_id"] is not None) == tracked


def test_health_and_model_card(client: TestClient) -> None:
    health = client.get("/api/health")
    assert health.status_code == 200
    assert all(client.head(path).status_code == 200 for path in ("/", "/api/health", "/api/model"))  # uptime checkers
    websocket_over_http = client.get("/ws")
    assert websocket_over_http.status_code == 426 and "is a WebSocket" in websocket_over_http.json()["detail"]
    assert health.json() == {"status": "ok", "model": DEFAULT_MODEL, "model_version": client.get("/api/model").json()["version"],
                             "fervid": fervid.__version__}
    card = client.get("/api/model").json()
    assert card["classes"] == list(EXPRESSIONS)
    assert card["name"] == DEFAULT_MODEL and "version" in card


def test_the_served_model_card_names_training_files_without_their_folders(tmp_path: Path) -> None:
    """/api/model published the card as it is: a model trained here, served with --host 0.0.0.0,
    told the network where the user keeps their data, teachers and runs."""
    import shutil

    from fervid.export.onnx import write_card
    from fervid.runtime.classify import bundled_model_cards, bundled_model_path

    model = tmp_path / "mine.onnx"
    shutil.copy(bundled_model_path(DEFAULT_MODEL), model)
    card = bundled_model_cards()[DEFAULT_MODEL]
    card["training"] = {**card["training"], "data": "/home/ana/private/faces.zip", "init_from": "/home/ana/runs/a/model.keras",
                        "teacher": ["/home/ana/t/one.onnx", "C:\\Users\\ana\\two.onnx"], "arch": "vgg"}
    write_card(model, card)
    with TestClient(create_app(model, workers=1, allowed_hosts=["testserver"])) as local:
        served = local.get("/api/model").json()["training"]
    assert (served["data"], served["init_from"], served["teacher"], served["arch"]) == (
        "faces.zip", "model.keras", ["one.onnx", "two.onnx"], "vgg")
    assert "/home/ana" not in json.dumps(served)


def test_a_query_parameter_given_twice_is_refused_not_the_last_taken(client: TestClient) -> None:
    photo = encoded(textured_background(120, 160), ".png")
    for query in ("crops=maybe&crops=true", "crops=true&crops=false"):
        reply = client.post(f"/api/predict?{query}", files={"file": ("a.png", photo, "image/png")})
        assert reply.status_code == 422 and reply.json()["detail"] == "crops (query): given more than once; give it once, true or false"


def test_a_wrong_address_or_method_says_where_to_go(client: TestClient) -> None:
    """A page showing `detail` printed just "Not Found" or "Method Not Allowed"."""
    missing = client.get("/api/predictions")
    assert missing.status_code == 404 and missing.json()["detail"].startswith("nothing at /api/predictions; the page is GET /")
    static = client.get("/static/nope.js")  # the app's own mount: its addresses named /static/api/predict
    assert static.status_code == 404 and static.json()["detail"].startswith("nothing at /static/nope.js; the page is GET /, the API POST /api/predict")
    typed = client.get("/api/predict")  # the API's address typed into a browser
    assert typed.status_code == 405 and typed.headers["allow"] == "POST"
    assert typed.json()["detail"].startswith("/api/predict takes POST, not GET; the page is GET /, the API POST /api/predict")
    put = client.put("/api/health")  # HEAD is answered there too (uptime checkers): Allow said GET only
    assert put.status_code == 405 and put.headers["allow"] == "GET, HEAD"
    assert put.json()["detail"].startswith("/api/health takes GET, HEAD, not PUT;")
    assert client.head("/api/health").status_code == 200


def test_a_file_field_given_twice_is_refused_whatever_the_order(client: TestClient) -> None:
    """A text and a file field both named 'file' were decided by their order: 200 one way, 422 the other."""
    photo = encoded(textured_background(120, 160))
    for fields in ([("file", (None, "hello")), ("file", ("a.png", photo, "image/png"))],
                   [("file", ("a.png", photo, "image/png")), ("file", (None, "hello"))]):
        reply = client.post("/api/predict", files=fields)
        assert reply.status_code == 422 and reply.json()["detail"].startswith("the field 'file' is given more than once")
    assert client.post("/api/predict", json={}).json()["detail"].startswith("send the image as multipart/form-data")  # own details kept


def test_page_docs_and_static_files_work_offline(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and 'src="static/app.js"' in page.text, "relative: the app may be mounted under a prefix"
    # The page's links are relative to it: opened from /static/ it had no script or style, so it is sent to the page.
    moved = client.get("/static/index.html", follow_redirects=False)
    assert moved.status_code == 301 and moved.headers["location"] == "../"
    assert client.get("/static/index.html").url.path == "/"
    for name in ("index.html", "app.js", "style.css"):
        assert client.get(f"/static/{name}").status_code == 200
        text = (STATIC / name).read_text()
        # No CDN or other site: every script, style, font and fetch is served by fervid itself.
        assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//|url\(\s*["']?(?:https?:)?//|@import|fetch\(\s*["'`]https?:""", text), name
    assert client.get("/docs").status_code == 200
    upload = client.get("/openapi.json").json()["paths"]["/api/predict"]["post"]["requestBody"]["content"]
    assert upload["multipart/form-data"]["schema"]["required"] == ["file"]


def test_the_app_mounted_under_a_prefix_serves_its_page_its_files_and_its_api() -> None:
    from fastapi import FastAPI

    main = FastAPI()
    main.mount("/fer", create_app(allowed_hosts=["testserver"]))
    with TestClient(main) as client:
        page = client.get("/fer/")
        links = [link for link in re.findall(r'(?:src|href)="([^"]+)"', page.text) if ":" not in link]  # not data:
        assert page.status_code == 200 and links and all(not link.startswith("/") for link in links), links
        for link in links:
            assert client.get(f"/fer/{link}").status_code == 200, link
        assert client.get("/fer/static/index.html").url.path == "/fer/"
        photo = {"file": ("face.png", encoded(face_photo()[0]), "image/png")}
        assert client.post("/fer/api/predict", files=photo).json()["faces"]
        with client.websocket_connect("/fer/ws") as socket:
            socket.send_bytes(encoded(textured_background(120, 160)))
            assert socket.receive_json()["faces"] == []
        # the errors that say where to go give the mounted addresses (they named /api/predict, /ws, ...)
        routes = ("the page is GET /fer/, the API POST /fer/api/predict, GET /fer/api/health and /fer/api/model, "
                  "the WebSocket /fer/ws (see /fer/docs)")
        assert client.get("/fer/nope").json() == {"detail": f"nothing at /fer/nope; {routes}"}
        wrong_method = client.post("/fer/api/health")
        assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "GET, HEAD"
        assert wrong_method.json() == {"detail": f"/fer/api/health takes GET, HEAD, not POST; {routes}"}
        # under the app's own /static mount too (they named /fer/static/api/predict, /fer/static/ws, ...)
        assert client.get("/fer/static/nope.js").json() == {"detail": f"nothing at /fer/static/nope.js; {routes}"}
        posted = client.post("/fer/static/api/predict")
        assert posted.status_code == 405 and posted.json() == {
            "detail": f"/fer/static/api/predict takes GET, HEAD, not POST; {routes}"}
        from starlette.testclient import WebSocketDenialResponse

        with pytest.raises(WebSocketDenialResponse) as refused:
            with client.websocket_connect("/fer/ws/"):
                pass
        assert json.loads(refused.value.content) == {"detail": "no WebSocket at /fer/ws/; the frame WebSocket is /fer/ws"}


def test_predict_finds_the_face_and_its_expression(client: TestClient) -> None:
    photo, truth = face_photo()
    response = client.post("/api/predict", files={"file": ("face.png", encoded(photo), "image/png")})
    assert response.status_code == 200, response.text
    result = response.json()
    assert (result["width"], result["height"]) == (480, 360)
    assert result["ms"] > 0
    assert len(result["faces"]) == 1
    assert_face_result(result["faces"][0], truth)


def test_a_phone_photo_is_turned_upright_by_its_exif_orientation(client: TestClient) -> None:
    """Phones store a portrait photo sideways with an orientation tag; the face is found upright."""
    photo, truth = face_photo()
    sideways = cv2.rotate(photo, cv2.ROTATE_90_COUNTERCLOCKWISE)
    plain = client.post("/api/predict", files={"file": ("phone.jpg", encoded(sideways, ".jpg"), "image/jpeg")}).json()
    assert (plain["width"], plain["height"]) == (360, 480)  # without the tag: stored sideways
    result = client.post("/api/predict", files={"file": ("phone.jpg", exif_oriented_jpeg(sideways, 6), "image/jpeg")}).json()
    assert (result["width"], result["height"]) == (480, 360)
    assert len(result["faces"]) == 1
    assert_face_result(result["faces"][0], truth)


def test_media_type_case_does_not_matter(client: TestClient) -> None:
    """RFC 9110: "Multipart/Form-Data" is multipart/form-data."""
    request = client.build_request("POST", "/api/predict", files={"file": ("face.png", encoded(face_photo()[0]), "image/png")})
    request.headers["content-type"] = request.headers["content-type"].replace("multipart/form-data", "Multipart/Form-Data")
    response = client.send(request)
    assert response.status_code == 200, response.text
    assert len(response.json()["faces"]) == 1


def test_an_image_over_the_pixel_limit_is_named_so_not_unreadable() -> None:
    """OpenCV reads its pixel limit once per process, so this runs in a fresh one with a small limit."""
    import os
    import subprocess
    import sys

    script = """
import cv2, numpy as np
from fastapi.testclient import TestClient
from fervid.serve import create_app
def png(side): return cv2.imencode(".png", np.zeros((side, side), np.uint8))[1].tobytes()
with TestClient(create_app(workers=1, allowed_hosts=["*"])) as client:
    small = client.post("/api/predict", files={"file": ("s.png", png(90), "image/png")})
    large = client.post("/api/predict", files={"file": ("l.png", png(200), "image/png")})
    with client.websocket_connect("/ws") as socket:
        socket.send_bytes(png(200))
        try:
            socket.receive_json()
        except Exception as closed:
            print(closed.code)
print(small.status_code, large.status_code, large.json()["detail"])
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "OPENCV_IO_MAX_IMAGE_PIXELS": "10000"})
    assert result.returncode == 0, result.stderr
    websocket_code, statuses = result.stdout.splitlines()
    assert websocket_code == "1009"
    assert statuses.startswith("200 422 the uploaded file is an image over ") and "OPENCV_IO_MAX_IMAGE_PIXELS" in statuses


def test_predict_without_a_face_returns_an_empty_list(client: TestClient) -> None:
    response = client.post("/api/predict", files={"file": ("wall.jpg", encoded(textured_background(300, 400, seed=7), ".jpg"), "image/jpeg")})
    assert response.status_code == 200
    assert response.json()["faces"] == []


def _chunked_multipart(size: int):
    yield b'--cut\r\nContent-Disposition: form-data; name="file"; filename="big.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
    for _ in range(size // 100_000):
        yield b"\xff" * 100_000
    yield b"\r\n--cut--\r\n"


@pytest.mark.parametrize("how", ["content-length", "chunked"])
def test_upload_over_the_limit_gets_413(client: TestClient, how: str) -> None:
    if how == "content-length":
        response = client.post("/api/predict", files={"file": ("big.jpg", b"\xff" * (MAX_UPLOAD + 100_000), "image/jpeg")})
    else:  # no Content-Length: the server counts while it reads
        response = client.post(
            "/api/predict", content=_chunked_multipart(MAX_UPLOAD + 100_000), headers={"content-type": "multipart/form-data; boundary=cut"}
        )
    assert response.status_code == 413
    assert f"limit of {MAX_UPLOAD:,} bytes" in response.json()["detail"]


@pytest.mark.parametrize(
    ("request_kwargs", "status", "message"),
    [
        ({"files": {"file": ("notes.txt", b"just some text", "text/plain")}}, 415, "the uploaded file is not a readable image"),
        ({"files": {"file": ("fake.jpg", b"\xff\xd8\xff\xe0 truncated", "image/jpeg")}}, 415, "the uploaded file is not a readable image"),
        ({"json": {"image": "base64..."}}, 415, "multipart/form-data in the field 'file'"),
        ({"content": b"--x\r\n", "headers": {"content-type": "multipart/form-datax; boundary=x"}}, 415,
         "multipart/form-data in the field 'file'"),  # another media type, not a prefix of one
        ({"files": {"photo": ("face.png", b"\x89PNG", "image/png")}}, 422, "no multipart field 'file'"),
        ({"files": [("file", ("a.png", b"\x89PNG", "image/png")), ("thumb", ("b.png", b"\x89PNG", "image/png"))]}, 422,
         "more than one file in the form; send one photo per request, in the field 'file'"),
        ({"files": {"file": ("empty.png", b"", "image/png")}}, 422, "file is empty"),
        ({"files": {"file": (None, b"\x89PNG", "image/png")}}, 422, "came as a text field (no filename)"),
        ({"files": {"file": (None, b"\xff" * 1_100_000, "image/png")}}, 422, "a text field (no filename) is over 1 MB; send the photo as a file"),
        # A large note beside a proper file: the note is named as a text field, not 'file'.
        ({"data": {"note": "x" * 1_100_000}, "files": {"file": ("face.png", b"\x89PNG", "image/png")}}, 422, "a text field (no filename) is over 1 MB"),
        ({"data": {f"f{i}": "x" for i in range(9)}, "files": {"file": ("face.png", b"\x89PNG", "image/png")}}, 422,
         "more than 8 text fields in the form; send only the photo"),
    ],
    ids=["text-file", "broken-jpeg", "json-body", "prefixed-type", "wrong-field", "two-files", "empty-file", "no-filename", "no-filename-over-1mb", "big-note", "many-fields"],
)
def test_bad_uploads_get_a_clear_message(client: TestClient, request_kwargs: dict, status: int, message: str) -> None:
    response = client.post("/api/predict", **request_kwargs)
    assert response.status_code == status
    assert message in response.json()["detail"]


def test_a_websocket_to_another_address_is_404_naming_the_frame_websocket(client: TestClient) -> None:
    """/ws/ (a trailing slash) or /api/health were refused 403 at the handshake, which the docs give
    for a page of another site."""
    from starlette.testclient import WebSocketDenialResponse

    for path in ("/ws/", "/api/health", "/", "/static/app.js"):
        with pytest.raises(WebSocketDenialResponse) as refused:
            with client.websocket_connect(path):
                pass
        assert refused.value.status_code == 404
        assert json.loads(refused.value.content) == {"detail": f"no WebSocket at {path}; the frame WebSocket is /ws"}


def test_websocket_answers_each_frame_with_faces(client: TestClient) -> None:
    photo, truth = face_photo()
    frame = encoded(photo, ".jpg", cv2.IMWRITE_JPEG_QUALITY, 90)
    with client.websocket_connect("/ws") as socket:
        replies = []
        for _ in range(6):
            socket.send_bytes(frame)
            replies.append(socket.receive_json())
    assert all((reply["width"], reply["height"]) == (480, 360) for reply in replies)
    assert replies[0]["faces"] == []  # a face is shown once a second scan confirms it: the next frame
    for reply in replies[1:]:
        assert len(reply["faces"]) == 1
        assert_face_result(reply["faces"][0], truth, tracked=True)
    assert len({reply["faces"][0]["track_id"] for reply in replies[1:]}) == 1  # one face, one id


def test_each_websocket_tracks_its_own_faces(client: TestClient) -> None:
    photo, _ = face_photo()
    frame = encoded(photo, ".jpg", cv2.IMWRITE_JPEG_QUALITY, 90)
    with client.websocket_connect("/ws") as first, client.websocket_connect("/ws") as second:
        for socket in (first, second, first, second):
            socket.send_bytes(frame)
            reply = socket.receive_json()
        first.send_bytes(encoded(textured_background(360, 480)))
        assert first.receive_json()["faces"] == []  # the face left the first stream ...
        second.send_bytes(frame)
        assert len(second.receive_json()["faces"]) == 1  # ... not the second
    assert reply["faces"][0]["track_id"] == 1  # ids count per connection


@pytest.mark.parametrize(
    ("send", "code", "reason"),
    [
        (lambda socket: socket.send_text("hello"), 1003, "binary message"),
        (lambda socket: socket.send_bytes(b"definitely not a jpeg"), 1007, "not a readable image"),
        (lambda socket: socket.send_bytes(b"\xff" * (MAX_FRAME + 1)), 1009, "frame larger than"),
    ],
    ids=["text", "garbage-bytes", "too-big"],
)
def test_malformed_message_closes_only_that_socket(client: TestClient, send, code: int, reason: str) -> None:
    photo, truth = face_photo()
    frame = encoded(photo, ".jpg", cv2.IMWRITE_JPEG_QUALITY, 90)
    with client.websocket_connect("/ws") as good, client.websocket_connect("/ws") as bad:
        send(bad)
        with pytest.raises(WebSocketDisconnect) as closed:
            bad.receive_json()
        assert closed.value.code == code and reason in closed.value.reason
        for _ in range(2):
            good.send_bytes(frame)
            reply = good.receive_json()
        assert_face_result(reply["faces"][0], truth, tracked=True)
    assert client.get("/api/health").status_code == 200


def test_websocket_from_another_site_is_refused(client: TestClient) -> None:
    with pytest.raises(WebSocketDisconnect) as closed:  # refused before the handshake completes (HTTP 403)
        with client.websocket_connect("/ws", headers={"origin": "http://evil.example"}):
            pass
    assert closed.value.code == 1008
    with client.websocket_connect("/ws", headers={"origin": "http://testserver"}) as socket:
        socket.send_bytes(encoded(textured_background(120, 160)))
        assert socket.receive_json()["faces"] == []


def test_streams_past_the_limit_are_told_to_try_again_and_pages_still_load() -> None:
    """uvicorn counts WebSockets as connections but never refuses one: past its 64, every page and
    upload got 503 while the streams went on. The app caps streams below that."""
    frame = encoded(face_photo()[0], ".jpg")
    with TestClient(create_app(allowed_hosts=["testserver"], max_streams=2)) as client:
        with client.websocket_connect("/ws") as first, client.websocket_connect("/ws") as second:
            with client.websocket_connect("/ws") as third, pytest.raises(WebSocketDisconnect) as closed:
                third.receive_json()
            assert closed.value.code == 1013 and closed.value.reason == "2 live streams are open; try again later"  # the page says "the server is busy: " before it
            for socket in (first, second):
                socket.send_bytes(frame)
                assert "faces" in socket.receive_json()
            assert client.get("/api/health").status_code == 200
        with client.websocket_connect("/ws") as again:  # the closed ones gave their places back
            again.send_bytes(frame)
            assert "faces" in again.receive_json()


def test_an_allowed_origin_may_call_the_api_with_cors_and_others_still_may_not() -> None:
    front_end = "http://localhost:3000"
    photo = {"file": ("face.png", encoded(face_photo()[0]), "image/png")}
    with TestClient(create_app(allowed_hosts=["testserver"], allowed_origins=[front_end + "/"])) as client:
        preflight = client.options("/api/predict", headers={"origin": front_end, "access-control-request-method": "POST"})
        assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == front_end
        # Chrome's private-network preflight (a public page calling a server on this machine) was refused 400.
        private = client.options("/api/predict", headers={"origin": front_end, "access-control-request-method": "POST",
                                                          "access-control-request-private-network": "true"})
        assert private.status_code == 200 and private.headers["access-control-allow-private-network"] == "true"
        reply = client.post("/api/predict", files=photo, headers={"origin": front_end})
        assert reply.status_code == 200 and reply.headers["access-control-allow-origin"] == front_end and reply.json()["faces"]
        with client.websocket_connect("/ws", headers={"origin": front_end}) as socket:
            socket.send_bytes(encoded(textured_background(120, 160)))
            assert socket.receive_json()["faces"] == []
        refused = client.post("/api/predict", files=photo, headers={"origin": "http://evil.example"})
        assert refused.status_code == 403 and "access-control-allow-origin" not in refused.headers
        # Compared whole, as the CORS answer compares it: let through, it would have had no CORS header.
        slashed = client.post("/api/predict", files=photo, headers={"origin": front_end + "/"})
        assert slashed.status_code == 403 and "access-control-allow-origin" not in slashed.headers
    for bad in ("localhost:3000", "http://[::1"):  # the broken IPv6 address was a ValueError traceback
        with pytest.raises(FervidError, match=f"--allow-origin {re.escape(repr(bad))}: give a page's origin"):
            create_app(allowed_origins=[bad])


def test_a_cropped_face_is_classified_whole_with_crops_and_a_small_photo_without_one_says_so(client: TestClient) -> None:
    crop = encoded(cv2.resize(detectable_faces(1)[0], (48, 48)))
    plain = client.post("/api/predict", files={"file": ("crop.png", crop, "image/png")}).json()
    assert plain["faces"] == [] and "?crops=true" in plain["note"]
    whole = client.post("/api/predict?crops=true", files={"file": ("crop.png", crop, "image/png")}).json()
    assert [face["box"] for face in whole["faces"]] == [[0, 0, 48, 48]] and "note" not in whole  # not even null
    big = client.post("/api/predict", files={"file": ("wall.png", encoded(textured_background(360, 480)), "image/png")}).json()
    assert big["faces"] == [] and big.get("note") is None, "a photo-sized image without a face is just that"
    for shape in ((1, 1), (4, 100)):  # classified as asked, yet no face crop: the note says so, as predict --crops warns
        odd = client.post("/api/predict?crops=true", files={"file": ("odd.png", encoded(np.full(shape, 128, np.uint8)), "image/png")}).json()
        assert len(odd["faces"]) == 1 and odd["note"] == f"a {shape[1]}x{shape[0]} image is hardly a face crop; classified anyway"


def test_recognition_runs_off_the_event_loop(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """While one frame is being recognised, the server still answers other requests (several tabs at once)."""
    release = threading.Event()
    served_while_busy = []
    real_next = LiveStream.next

    def blocked_next(stream, image, recognizer):
        served_while_busy.append(release.wait(timeout=20))
        return real_next(stream, image, recognizer)

    monkeypatch.setattr(LiveStream, "next", blocked_next)
    with client.websocket_connect("/ws") as socket:
        socket.send_bytes(encoded(textured_background(120, 160)))
        assert client.get("/api/health").status_code == 200  # would wait for the frame if it blocked the loop
        release.set()
        assert socket.receive_json()["faces"] == []
    assert served_while_busy == [True]


def test_only_this_machines_names_are_answered_and_other_sites_cannot_upload() -> None:
    """DNS rebinding (a page whose own name resolves to 127.0.0.1) is refused by Host; a page of another
    site posting a form (no CORS preflight needed) is refused by its Origin; curl (no Origin) is served."""
    with TestClient(create_app(workers=1), base_url="http://127.0.0.1:8000") as local:
        assert local.get("/api/health").status_code == 200
        assert local.get("/api/health", headers={"host": "localhost:8000"}).status_code == 200
        assert local.get("/api/health", headers={"host": "[::1]:8000"}).status_code == 200
        assert local.get("/api/health", headers={"host": "evil.example:8000"}).status_code == 400
        photo = {"file": ("wall.jpg", encoded(textured_background(120, 160)), "image/jpeg")}
        assert local.post("/api/predict", files=photo).status_code == 200
        assert local.post("/api/predict", files=photo, headers={"origin": "http://127.0.0.1:8000"}).status_code == 200
        foreign = local.post("/api/predict", files=photo, headers={"origin": "http://evil.example"})
        assert foreign.status_code == 403 and "cross-origin" in foreign.json()["detail"]
        with pytest.raises(WebSocketDisconnect):
            with local.websocket_connect("ws://evil.example:8000/ws"):
                pass
    assert allowed_hosts_for("127.0.0.1") == LOCAL_HOSTS and allowed_hosts_for("0.0.0.0") == ANY_HOST
    proxied = allowed_hosts_for("127.0.0.1", ["fervid.example.com"])  # `--allow-host`, for a TLS proxy on this machine
    with TestClient(create_app(workers=1, allowed_hosts=proxied), base_url="http://127.0.0.1:8000") as behind_proxy:
        assert behind_proxy.get("/api/health", headers={"host": "fervid.example.com"}).status_code == 200
        assert behind_proxy.get("/api/health", headers={"host": "evil.example"}).status_code == 400
    with TestClient(create_app(workers=1, allowed_hosts=allowed_hosts_for("0.0.0.0", ["www.fervid.lan"])),
                    base_url="http://127.0.0.1:8000", follow_redirects=False) as named:  # Starlette redirected it to www.
        refused = named.get("/api/health", headers={"host": "fervid.lan"})
        assert refused.status_code == 400 and refused.text == "Invalid host header"
    for bad in ("", "fervid.*.com", "*example.com", "HTTP://other.example.com", "a b", "fervid.example.com/"):
        with pytest.raises(FervidError, match="--allow-host .*: give a host name such as fervid.example.com"):
            allowed_hosts_for("127.0.0.1", [bad])
    # Names that matched no request (every request then 400): the check drops a Host's port, and browsers lower-case it.
    with pytest.raises(FervidError, match=r"--allow-host 'fervid.example.com:443': give the name without its port \(fervid.example.com\)"):
        allowed_hosts_for("127.0.0.1", ["fervid.example.com:443"])
    with TestClient(create_app(workers=1, allowed_hosts=allowed_hosts_for("127.0.0.1", ["Fervid.Example.COM"])),
                    base_url="http://127.0.0.1:8000") as mixed_case:
        assert mixed_case.get("/api/health", headers={"host": "fervid.example.com:443"}).status_code == 200
    # An IPv6 address, bracketed or not, is the bracketed name a browser sends.
    assert allowed_hosts_for("::", ["[2001:db8::5]", "2001:DB8::6"])[-2:] == ("[2001:db8::5]", "[2001:db8::6]")


def test_detector_settings_reach_every_recognizer_of_the_server() -> None:
    """`fervid serve --min-size` etc. work as in predict and live: no face is 2000 px, so none is found."""
    photo = {"file": ("face.png", encoded(face_photo()[0]), "image/png")}
    with TestClient(create_app(workers=2, detector={"min_size": 2000}), base_url="http://127.0.0.1") as strict:
        assert [recognizer.detector.config.min_size for recognizer in strict.app.state.pool.recognizers] == [2000, 2000]
        assert strict.post("/api/predict", files=photo).json()["faces"] == []


def test_images_are_unpacked_at_most_workers_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 65 KB PNG can unpack to 400 MB; decoding under the borrowed Recognizer caps how many at once."""
    import fervid.serve.pool as pool_module

    pool = RecognizerPool(workers=2)
    lock, active, most = threading.Lock(), [0], [0]

    def slow_decode(data: bytes) -> np.ndarray:
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
        threading.Event().wait(0.05)
        with lock:
            active[0] -= 1
        return textured_background(60, 80)

    monkeypatch.setattr(pool_module, "decode_image", slow_decode)
    threads = [threading.Thread(target=pool.recognize, args=(b"png",)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most[0] == 2


@pytest.fixture
def file_writes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every attempt to write a file (open for writing, temporary files, cv2.imwrite) while the test runs."""
    writes: list[str] = []
    real_open = builtins.open

    def guarded_open(file, mode="r", *args, **kwargs):
        if any(flag in mode for flag in "wax+"):
            writes.append(f"open({file!r}, {mode!r})")
        return real_open(file, mode, *args, **kwargs)

    def recorded(name, function):
        def wrapper(*args, **kwargs):
            writes.append(name)
            return function(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(builtins, "open", guarded_open)
    monkeypatch.setattr(io, "open", guarded_open)
    for name in ("TemporaryFile", "NamedTemporaryFile", "mkstemp", "mkdtemp"):
        monkeypatch.setattr(tempfile, name, recorded(f"tempfile.{name}", getattr(tempfile, name)))
    monkeypatch.setattr(cv2, "imwrite", recorded("cv2.imwrite", cv2.imwrite))
    return writes


def test_no_image_is_written_anywhere(client: TestClient, file_writes: list[str]) -> None:
    with tempfile.SpooledTemporaryFile(max_size=1) as spooled:  # the guard sees a spool going to disk
        spooled.write(b"more than one byte")
    assert "tempfile.TemporaryFile" in file_writes
    file_writes.clear()

    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (760, 760, 3), dtype=np.uint8)  # noise: a PNG over 1 MB, where Starlette would spool to disk
    paste_face(photo, detectable_faces(1)[0], 300, 300, 160)
    data = encoded(photo)
    assert 1_100_000 < len(data) < MAX_UPLOAD
    assert client.post("/api/predict", files={"file": ("big.png", data, "image/png")}).status_code == 200
    with client.websocket_connect("/ws") as socket:
        for _ in range(2):
            socket.send_bytes(encoded(face_photo()[0], ".jpg"))
            reply = socket.receive_json()
        assert len(reply["faces"]) == 1
    assert file_writes == []


def test_serve_rejects_a_bad_port_before_loading_anything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from fervid.cli import app
    from fervid.errors import FervidError

    # A model loaded first would take seconds before the error, and a port's error came at the bind.
    monkeypatch.setattr("fervid.serve.app.RecognizerPool", lambda *args, **kwargs: pytest.fail("loaded before the options were checked"))

    faces = tmp_path / "faces.zip"  # a zip: the load test's checks of its other options come after this one
    with zipfile.ZipFile(faces, "w") as archive:
        archive.writestr("validation/happy/0.png", b"")
    result = CliRunner().invoke(app, ["serve", "--port", "70000"])
    assert isinstance(result.exception, FervidError) and "port must be between 1 and 65535 (or 0 for any free one)" in str(result.exception)
    for args, message in [
        (["--max-upload-mb", "1e-7"], "--max-upload-mb must be a positive number"),  # under a byte (nan: test_cli)
        (["--workers", "0"], "--workers must be 1 to 64, got 0"),
        (["--workers", "100000"], "--workers must be 1 to 64, got 100000"),  # each loads the model: minutes, memory growing
        (["--loadtest", "--seconds", "0.5"], "--seconds must be at least 1 (a shorter run may answer no frame), got 0.5"),
        (["--loadtest", "--clients", "49"], "--clients must be 1 to 48 (the live streams the server takes at once), got 49"),
        (["--clients", "3", "--output", "perf.md"], "--clients, --output: not used without --loadtest"),  # would just serve
        (["--loadtest", "--port", "9000"], "--port: not used with --loadtest (the load test serves on a private 127.0.0.1 port)"),
        (["--loadtest", "--allow-host", "fervid.example.com"], "--allow-host: not used with --loadtest"),
        (["--allow-origin", "localhost:3000"], "--allow-origin 'localhost:3000': give a page's origin such as http://localhost:3000"),
        (["--allow-origin", "http://*.example.com"], "--allow-origin 'http://*.example.com': name each page's origin in full"),
        (["--loadtest", "--faces-from", "/nowhere/fer2013.zip"], "--faces-from /nowhere/fer2013.zip: no such file"),
        (["--loadtest", "--faces-from", __file__], "not a zip file (give the FER2013 zip)"),
        (["--loadtest", "--faces-from", str(faces), "--output", str(tmp_path)], "a folder, not a file"),
        (["--loadtest", "--faces-from", str(faces), "--output", "/proc/perf.md"], "--output /proc/perf.md: cannot write in /proc"),
    ]:
        result = CliRunner().invoke(app, ["serve", *args])
        assert isinstance(result.exception, FervidError) and message in str(result.exception), (args, result.exception)


def test_serve_on_a_taken_port_is_one_clear_error() -> None:
    import socket

    from typer.testing import CliRunner

    from fervid.cli import app
    from fervid.errors import FervidError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(app, ["serve", "--host", "127.0.0.1", "--port", str(port)])
    assert isinstance(result.exception, FervidError), result.output
    assert f"cannot listen on 127.0.0.1:{port}" in str(result.exception) and "pick another --port" in str(result.exception)
    from fervid.serve.server import bind

    if socket.has_ipv6:  # an IPv6 address in a URL's brackets, as fervid prints it, is that address
        try:
            listener = bind("[::1]", 0)
        except FervidError as error:
            assert str(error).startswith("cannot listen on [::1]:0 (")  # no IPv6 loopback here: said with its brackets
        else:
            assert listener.getsockname()[0] == "::1"
            listener.close()


def test_serving_on_every_interface_prints_the_address_that_gets_the_webcam() -> None:
    import socket
    import subprocess
    import sys

    server = subprocess.Popen([sys.executable, "-m", "fervid", "serve", "--host", "0.0.0.0", "--port", "0", "--workers", "1"],
                              stderr=subprocess.PIPE, text=True)  # port 0: any free one, no race with a port picked here
    try:
        lines = [server.stderr.readline() for _ in range(3)]
        port = int(re.match(r"fervid: serving on http://0\.0\.0\.0:(\d+) ", lines[0]).group(1))
        with socket.create_connection(("127.0.0.1", port), timeout=10):
            pass  # the printed port is the one it listens on
    finally:
        server.terminate()
        server.wait(30)
    assert port > 0
    assert lines[2].strip() == f"fervid: on this machine open http://127.0.0.1:{port} (the webcam needs it)"


def test_load_test_reports_latency_and_rewrites_only_its_section(tmp_path: Path) -> None:
    pytest.importorskip("websockets", reason="the load test's clients need the 'websockets' package")
    from fervid.markdown import replace_markdown_section
    from fervid.serve.loadtest import SECTION, run_loadtest

    detectable_faces(1)  # skips without the FER2013 zip
    page = tmp_path / "performance.md"
    page.write_text("# Performance\n\n## Classifier\n\nkeep me\n")
    report = run_loadtest(clients=2, seconds=2.0, output=page, workers=1)
    assert report.errors == []
    # A connection's first frame shows no face yet (a new face is confirmed on the next): count the rest.
    assert report.frames > 2 and report.faces >= 0.5 * (report.frames - 2)
    assert all(latency > 0 for latency in report.latencies_ms)
    text = page.read_text()
    assert text.startswith("# Performance\n\n## Classifier\n\nkeep me\n\n## Web server load test\n")
    assert "| round-trip latency | p50 " in text and "| errors | 0 |" in text
    assert report.elapsed >= 1.0 and f"({report.frames / max(report.elapsed, 2.0):.1f} frames/s in total)" in text

    import fervid.serve.loadtest as loadtest  # a run that answers nothing writes nothing (it wrote "p50 nan ms")
    before = page.read_text()

    async def nothing(url, frames, clients, seconds):
        return loadtest.LoadReport(clients, seconds, errors=["closed 1013: 48 live streams are open; try again later"])

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loadtest, "_drive", nothing)
        with pytest.raises(FervidError, match=r"no frame was answered in 1 s \(closed 1013: 48 live streams are open"):
            run_loadtest(clients=1, seconds=1.0, output=page, workers=1)
    assert page.read_text() == before

    replace_markdown_section(page, SECTION, "## Web server load test\n\nnew numbers\n")
    page.write_text(page.read_text() + "\n## Later section\n\nstays\n")
    replace_markdown_section(page, SECTION, "## Web server load test\n\nnewest numbers\n")
    assert page.read_text() == "# Performance\n\n## Classifier\n\nkeep me\n\n## Web server load test\n\nnewest numbers\n\n## Later section\n\nstays\n"

    # Another model's numbers go to a section named for it, never over the default model's (they
    # replaced it); the duration is the one given, not rounded (1.5 s said "2 s").
    before = page.read_text()
    compact = run_loadtest(model="fervid-compact", clients=1, seconds=1.5, output=page, workers=1)
    assert compact.section == "## Web server load test (fervid-compact)"
    text = page.read_text()
    assert text.startswith(before) and "\n## Web server load test (fervid-compact)\n" in text[len(before):]
    assert "- model: fervid-compact " in text[len(before):] and "| duration | 1.5 s |" in text[len(before):]


def test_a_detector_setting_that_finds_no_face_is_named_not_blamed_on_the_zip() -> None:
    """``--min-size 300`` (the pasted faces are 140 px) said "fer2013.zip: no validation face the
    detector finds", as if the zip were wrong."""
    pytest.importorskip("websockets", reason="the load test's clients need the 'websockets' package")
    from fervid.serve.loadtest import run_loadtest

    zip_path = fer2013_zip()
    with pytest.raises(FervidError) as refused:
        run_loadtest(clients=1, seconds=1.0, workers=1, faces_from=zip_path, detector={"min_size": 300, "min_neighbors": 5})
    assert str(refused.value) == (f"{zip_path}: the detector finds none of its validation faces, pasted 140 px wide on a 640x480 "
                                  "frame, with --min-size 300, --min-neighbors 5")


def test_silent_clients_are_closed_and_websockets_are_not(monkeypatch: pytest.MonkeyPatch) -> None:
    """A connection that sends nothing, or stops part-way through an upload, held a slot for good:
    64 of them locked everyone out (503). Closed after the idle time; a quiet WebSocket stays."""
    import socket
    import time

    import websockets.sync.client

    from fervid.serve.protocol import IdleTimeoutProtocol
    from fervid.serve.server import running_server

    monkeypatch.setattr(IdleTimeoutProtocol, "idle_s", 1.0)
    with running_server(create_app(workers=1)) as url:
        port = int(url.rsplit(":", 1)[1])
        silent = socket.create_connection(("127.0.0.1", port), timeout=10)
        stalled = socket.create_connection(("127.0.0.1", port), timeout=10)
        stalled.sendall(b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=x\r\n"
                        b"Content-Length: 100000\r\n\r\n--x\r\n")
        with websockets.sync.client.connect(url.replace("http", "ws") + "/ws") as stream:
            started = time.monotonic()
            assert silent.recv(1) == b"" and time.monotonic() - started < 5  # closed by the server
            assert stalled.recv(4096) == b"" and time.monotonic() - started < 5  # closed mid-upload, no answer
            time.sleep(0.5)  # the WebSocket has been quiet past the idle time too: still served
            for _ in range(2):  # the second frame confirms the face
                stream.send(encoded(face_photo()[0], ".jpg"))
                reply = json.loads(stream.recv(timeout=30))
            assert len(reply["faces"]) == 1
        silent.close()
        stalled.close()


def test_a_stop_does_not_wait_for_a_client_still_sending_its_upload() -> None:
    import signal
    import socket
    import subprocess
    import sys
    import time

    server = subprocess.Popen([sys.executable, "-m", "fervid", "serve", "--port", "0", "--workers", "1"], stderr=subprocess.PIPE, text=True)
    try:
        port = int(re.match(r"fervid: serving on http://127\.0\.0\.1:(\d+) ", server.stderr.readline()).group(1))
        with socket.create_connection(("127.0.0.1", port), timeout=10) as stalled:
            stalled.sendall(b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=x\r\n"
                            b"Content-Length: 100000\r\n\r\n--x\r\n")
            time.sleep(1.0)
            started = time.monotonic()
            server.send_signal(signal.SIGTERM)
            server.wait(20)
            assert time.monotonic() - started < 4, "the stop waited for the stalled upload"
    finally:
        server.kill()
    assert "Traceback" not in server.stderr.read()


def test_a_second_ctrl_c_while_photos_are_still_recognised_stops_without_a_traceback(tmp_path: Path) -> None:
    """uvicorn's lifespan task, which this app does not use, printed a CancelledError traceback when a
    second Ctrl+C came during the stop's wait for the requests in progress."""
    import signal
    import subprocess
    import sys
    import threading
    import time
    import urllib.error
    import urllib.request

    import numpy as np

    y, x = np.mgrid[0:8000, 0:8000]  # 64 megapixels in 2 MB: about a second each to recognise, one at a time
    big = encoded(cv2.merge([((x // 7 + y // 5) % 256).astype(np.uint8)] * 3), ".jpg", cv2.IMWRITE_JPEG_QUALITY, 70)
    boundary = "fervid-test"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.jpg\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode() + big + f"\r\n--{boundary}--\r\n".encode()
    server = subprocess.Popen([sys.executable, "-m", "fervid", "serve", "--port", "0", "--workers", "1"], stderr=subprocess.PIPE, text=True)
    statuses: list[int] = []

    def upload(port: int) -> None:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/predict", data=body,
                                         headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        try:
            with urllib.request.urlopen(request, timeout=60) as reply:
                statuses.append(reply.status)
        except urllib.error.HTTPError as error:
            statuses.append(error.code)
        except OSError:
            statuses.append(0)

    try:
        port = int(re.match(r"fervid: serving on http://127\.0\.0\.1:(\d+) ", server.stderr.readline()).group(1))
        # 16 photos: with the CPU to itself a 64-megapixel one took a quarter of a second, and 6 were
        # all answered before the first Ctrl+C
        clients = [threading.Thread(target=upload, args=(port,)) for _ in range(16)]
        for client in clients:
            client.start()
        time.sleep(1.0)
        server.send_signal(signal.SIGINT)
        time.sleep(0.5)
        server.send_signal(signal.SIGINT)
        server.wait(30)
        for client in clients:
            client.join(60)
    finally:
        server.kill()
    log = server.stderr.read()
    assert "Traceback" not in log and "CancelledError" not in log, log
    assert any(status != 200 for status in statuses), f"the stop came while photos were still waiting: {statuses}"


def test_any_loopback_address_keeps_the_host_check_and_origins_are_compared_as_browsers_send_them() -> None:
    from fervid.serve.guards import allowed_hosts_for, checked_origins, is_loopback

    assert is_loopback("127.0.0.2") and is_loopback("::1") and is_loopback("[::1]") and is_loopback("LocalHost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("example.com")
    assert allowed_hosts_for("127.0.0.2") == ("127.0.0.1", "::1", "localhost", "[::1]", "127.0.0.2")
    assert allowed_hosts_for("0.0.0.0") == ("*",)
    # On the network with its names given: only those (and this machine's), so a rebinding page's name is refused.
    assert allowed_hosts_for("0.0.0.0", ["192.168.1.5", "fervid.lan"]) == (*LOCAL_HOSTS, "192.168.1.5", "fervid.lan")
    assert allowed_hosts_for("192.168.1.5", ["fervid.lan"]) == (*LOCAL_HOSTS, "192.168.1.5", "fervid.lan")
    with TestClient(create_app(workers=1, allowed_hosts=allowed_hosts_for("0.0.0.0", ["fervid.lan"])),
                    base_url="http://attacker.example:8000") as rebound:
        assert rebound.get("/api/health").status_code == 400
    with TestClient(create_app(workers=1, allowed_hosts=allowed_hosts_for("127.0.0.2")), base_url="http://127.0.0.2:8000") as local:
        assert local.get("/api/health").status_code == 200
        assert local.get("/api/health", headers={"Host": "attacker.example"}).status_code == 400
    assert checked_origins(["http://LocalHost:3000/", "https://App.Example.com:443", "http://localhost:80", "http://[::1]:3000"]) == (
        "http://localhost:3000", "https://app.example.com", "http://localhost", "http://[::1]:3000")
    for bad in ["http://localhost:99999", "http://user@localhost", "ftp://localhost"]:
        with pytest.raises(FervidError, match="give a page's origin"):
            checked_origins([bad])


def test_replies_have_one_shape_and_every_error_is_one_sentence(client: TestClient) -> None:
    photo = encoded(face_photo()[0], ".jpg")
    reply = client.post("/api/predict", files={"file": ("p.jpg", photo, "image/jpeg")}).json()
    assert set(reply) == {"faces", "width", "height", "ms"} and reply["faces"][0]["track_id"] is None
    bad = client.post("/api/predict?crops=maybe", files={"file": ("p.jpg", photo, "image/jpeg")})
    assert bad.status_code == 422 and bad.json() == {"detail": "crops (query): Input should be a valid boolean, unable to interpret input"}
    for method in (client.get, client.head):
        plain = method("/ws")
        assert plain.status_code == 426 and plain.headers["upgrade"] == "websocket"


def test_a_client_trickling_its_upload_is_closed_at_the_request_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket
    import time

    from fervid.serve.protocol import IdleTimeoutProtocol
    from fervid.serve.server import running_server

    # idle 3 s, deadline 2 s: a close before 3 s is the deadline's, however a loaded machine stalls the client
    monkeypatch.setattr(IdleTimeoutProtocol, "idle_s", 3.0)
    monkeypatch.setattr("fervid.serve.server.request_deadline", lambda max_upload_bytes: 2.0)
    with running_server(create_app(workers=1)) as url:
        with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=10) as slow:
            slow.sendall(b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=x\r\n"
                         b"Content-Length: 100000\r\n\r\n")
            started = time.monotonic()
            closed = False
            while time.monotonic() - started < 15 and not closed:  # a byte every 0.3 s: never idle for 3 s
                try:
                    slow.sendall(b"x")
                except OSError:
                    closed = True
                time.sleep(0.3)
            assert closed and 1.5 < time.monotonic() - started < 12


def test_request_headers_over_64_kb_are_refused_431_not_read_whole() -> None:
    """uvicorn's httptools parser read a 100 MB header into memory and answered 200."""
    import http.client
    import socket

    from fervid.serve.server import running_server

    with running_server(create_app(workers=1)) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            client.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
            with contextlib.suppress(OSError):  # the server may close while the rest is still being sent
                for _ in range(40):
                    client.sendall(b"a" * 10_000)
            reply = client.recv(1000)
        assert reply.startswith(b"HTTP/1.1 431 ") and b"the request headers are over 64 KB" in reply
        # Headers of 70 KB that end in the read carrying them past the limit were served (200)
        for pieces in (1, 3):
            request = b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n"
            with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
                with contextlib.suppress(OSError):
                    for start in range(0, len(request), -(-len(request) // pieces)):
                        client.sendall(request[start : start + -(-len(request) // pieces)])
                reply = client.recv(1000)
            assert reply.startswith(b"HTTP/1.1 431 "), (pieces, reply[:60])
        normal = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        normal.request("GET", "/api/health", headers={"X-Fine": "a" * 8000})  # a large but real request is served
        assert normal.getresponse().status == 200
        # The rest of a body answered early (413 before the upload is read) is no header: it was counted
        # as one, and the client got a reset instead of its 413.
        upload = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        upload.request("POST", "/api/predict", body=b"x" * 20_000_000, headers={"Content-Type": "multipart/form-data; boundary=x"})
        assert upload.getresponse().status == 413
        # A request pipelined behind a running one is counted too.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            client.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
            with contextlib.suppress(OSError):
                for _ in range(40):
                    client.sendall(b"a" * 10_000)
            replies = b""
            with contextlib.suppress(OSError):
                while chunk := client.recv(4096):
                    replies += chunk
        assert b"HTTP/1.1 431 " in replies  # (the first request's answer may not get out before the close)


def test_a_request_with_two_host_headers_is_refused_whichever_comes_first() -> None:
    """The Host check read the first of two (RFC 9112 asks for 400): a proxy routing by the last
    could pass on a request for another name."""
    import socket

    from fervid.serve.server import running_server

    with running_server(create_app(workers=1)) as url:
        port = int(url.rsplit(":", 1)[1])
        for hosts in ([b"127.0.0.1"], [b"localhost", b"evil.example"], [b"evil.example", b"localhost"]):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
                client.sendall(b"GET /api/health HTTP/1.1\r\n" + b"".join(b"Host: " + host + b"\r\n" for host in hosts)
                               + b"Connection: close\r\n\r\n")
                status = client.recv(100).split(b"\r\n")[0]
            assert status == (b"HTTP/1.1 200 OK" if len(hosts) == 1 else b"HTTP/1.1 400 Bad Request"), hosts


def test_a_kept_alive_connection_in_steady_use_is_not_cut_at_the_request_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    """The deadline is per request: a client reusing its connection (a requests.Session posting photos)
    is never closed for the connection's age."""
    import http.client
    import time

    from fervid.serve.protocol import IdleTimeoutProtocol
    from fervid.serve.server import running_server

    monkeypatch.setattr(IdleTimeoutProtocol, "idle_s", 5.0)  # far above the 0.1 s between requests, stalls and all
    monkeypatch.setattr("fervid.serve.server.request_deadline", lambda max_upload_bytes: 2.0)
    with running_server(create_app(workers=1)) as url:
        connection = http.client.HTTPConnection("127.0.0.1", int(url.rsplit(":", 1)[1]), timeout=10)
        started = time.monotonic()
        answered = 0
        # More than twice the deadline and ten requests, one socket throughout (a busy machine's slower
        # replies lengthen the run rather than fail it).
        while time.monotonic() - started < 4.5 or answered < 10:
            connection.request("GET", "/api/health")
            response = connection.getresponse()
            assert response.status == 200 and response.getheader("connection") != "close"
            response.read()
            answered += 1
            time.sleep(0.1)
        connection.close()
    assert time.monotonic() - started >= 4.5 and answered >= 10


def test_the_request_deadline_grows_with_the_upload_limit() -> None:
    """A server taking 50 MB uploads gives a slow link the time to send one (1 Mbit/s, and half again)."""
    from fervid.serve.protocol import REQUEST_S, request_deadline
    from fervid.serve.server import server_config

    assert request_deadline(10_000_000) == REQUEST_S == 120.0 and request_deadline(50_000_000) == 600.0
    assert server_config(create_app(workers=1, max_upload_bytes=50_000_000)).http.request_s == 600.0


def test_a_request_ended_by_a_stop_is_answered_503_and_said_in_one_line(capsys) -> None:
    """A stop that waited its 5 s cancelled the requests still running: each printed a CancelledError
    traceback and its client got a bare text 500; uvicorn's own ERROR line said tasks were cancelled."""
    import asyncio
    import logging
    import time as clock

    from fastapi import HTTPException

    from fervid.serve.app import recognize_photo
    from fervid.serve.server import STOP_WAIT_S, StopNotice

    class SlowPool:
        async def recognize_in_turn(self, data, stream, crops, gone=None):  # a recognition on a worker thread, 0.3 s long
            await asyncio.to_thread(clock.sleep, 0.3)
            return {"faces": [], "width": 640, "height": 480, "ms": 300.0}

    async def stopped() -> HTTPException:
        task = asyncio.ensure_future(recognize_photo(SlowPool(), b"photo"))
        await asyncio.sleep(0.05)
        task.cancel("Task cancelled, timeout graceful shutdown exceeded")
        with pytest.raises(HTTPException) as error:
            await task
        return error.value

    error = asyncio.run(stopped())
    assert error.status_code == 503 and error.detail == "the server is stopping; send the photo again once it is back"
    record = logging.LogRecord("uvicorn.error", logging.ERROR, __file__, 1,
                               "Cancel %s running task(s), timeout graceful shutdown exceeded", (2,), None)
    assert StopNotice().filter(record) is False
    assert capsys.readouterr().err == (f"fervid: stopping: 2 request(s) still running after {STOP_WAIT_S} s were ended "
                                       "(photos answered 503 'the server is stopping')\n")
    other = logging.LogRecord("uvicorn.error", logging.ERROR, __file__, 1, "something else", (), None)
    assert StopNotice().filter(other) is True


def test_a_stop_answers_photos_still_being_recognised_503_and_closes_live_streams_1012(monkeypatch: pytest.MonkeyPatch, capfd) -> None:
    """Ctrl+C while a photo and a live frame are being recognised: after the stop's wait the photo
    gets a 503 JSON answer (not a bare 500 and a traceback), the stream a 1012 close ('service
    restart', so a page knows to reconnect later), and stderr one line saying so."""
    import contextlib
    import threading
    import time

    import httpx
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    from fervid.serve import server as server_module
    from fervid.serve.pool import RecognizerPool
    from fervid.serve.server import running_server

    monkeypatch.setattr(server_module, "STOP_WAIT_S", 0.5)
    recognize = RecognizerPool.recognize

    started = threading.Semaphore(0)

    def slow(self, data, stream=None, crop=False):
        started.release()
        time.sleep(3.0)  # still running when the stop's wait is over
        return recognize(self, data, stream, crop)

    monkeypatch.setattr(RecognizerPool, "recognize", slow)
    photo = cv2.imencode(".jpg", textured_background(120, 160))[1].tobytes()
    replies: list[httpx.Response] = []
    with contextlib.ExitStack() as sockets:  # outlives the server: its close is the server's, not ours
        with running_server(create_app(workers=2)) as url:
            socket = sockets.enter_context(connect(url.replace("http://", "ws://") + "/ws"))
            socket.send(photo)
            poster = threading.Thread(target=lambda: replies.append(
                httpx.post(f"{url}/api/predict", files={"file": ("a.jpg", photo, "image/jpeg")}, timeout=30)))
            poster.start()
            assert started.acquire(timeout=20) and started.acquire(timeout=20)  # both are being recognised
        poster.join(30)  # the server has stopped: leaving its block stopped it
        assert len(replies) == 1 and replies[0].status_code == 503
        assert replies[0].json()["detail"].startswith("the server is stopping")
        with pytest.raises(ConnectionClosed) as closed:
            socket.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
    assert "request(s) still running after 0.5 s were ended" in capfd.readouterr().err


def test_requests_wait_for_a_recognizer_without_holding_a_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each waiting photo held one of the 40 threads that also serve the page: 40 queued uploads kept
    GET / waiting for seconds. Now they wait on the event loop, and only `workers` threads recognise."""
    import asyncio
    import threading
    import time

    from fervid.serve.pool import RecognizerPool

    running, most = [], [0]
    lock = threading.Lock()

    def slow(self, data, stream=None, crop=False):
        with lock:
            running.append(1)
            most[0] = max(most[0], len(running))
        time.sleep(0.1)
        with lock:
            running.pop()
        return {"faces": []}

    monkeypatch.setattr(RecognizerPool, "recognize", slow)
    pool = RecognizerPool(workers=2)

    async def many() -> list[dict]:
        return await asyncio.gather(*(pool.recognize_in_turn(b"photo") for _ in range(8)))

    replies = asyncio.run(many())
    assert [reply["faces"] for reply in replies] == [[]] * 8
    assert most[0] == 2, "threads in use at once: the workers', not one per waiting request"
    assert max(reply["ms"] for reply in replies) >= 350, "ms counts the wait for a recognizer too (4 turns of 0.1 s)"


def test_refused_connections_are_counted_not_each_logged(capsys, monkeypatch) -> None:
    """uvicorn's "Exceeded concurrency limit." line came once per refused connection, filling the
    terminal; then the ones after a line were said only if another came after the interval. On a
    clock and timers of the test's own: nothing waits, and no timer outlives the test."""
    import logging
    import threading
    from types import SimpleNamespace

    from fervid.serve import server
    from fervid.serve.server import BusyNotice

    clock, timers = [100.0], []

    class Timer:
        def __init__(self, interval: float, function) -> None:
            self.interval, self.function, self.daemon = interval, function, False

        def start(self) -> None:
            timers.append(self)

    monkeypatch.setattr(server, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    monkeypatch.setattr(server, "threading", SimpleNamespace(Lock=threading.Lock, Timer=Timer))
    notice = BusyNotice()
    busy = logging.LogRecord("uvicorn.error", logging.WARNING, "", 0, "Exceeded concurrency limit.", None, None)
    other = logging.LogRecord("uvicorn.error", logging.WARNING, "", 0, "something else", None, None)
    assert [notice.filter(busy) for _ in range(5)] == [False] * 5 and notice.filter(other)
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["fervid: 1 connection(s) refused (503): 64 are open, the most this server keeps (said at most every 10 s)"]
    assert notice.refused == 4, "the others counted for the next line"
    assert [timer.interval for timer in timers] == [10.0] and timers[0].daemon, "one timer, for the interval's end"
    clock[0] += 10
    timers[0].function()  # the interval ends: a burst that then stopped is said now
    assert capsys.readouterr().err.startswith("fervid: 4 connection(s) refused (503)")
    clock[0] += 3
    notice.filter(busy)  # 3 s after the last line: counted, to be said when the interval ends
    assert capsys.readouterr().err == "" and len(timers) == 2
    notice.flush()  # the server stopping: the count not yet said is said
    assert capsys.readouterr().err.startswith("fervid: 1 connection(s) refused (503)")
    timers[1].function()  # its timer, firing later, has nothing left to say
    assert capsys.readouterr().err == ""

def test_a_photo_whose_client_left_is_not_recognized_and_recognitions_keep_off_the_page_threads(monkeypatch) -> None:
    """Abandoned uploads were recognized all the same (the next client waited 10 s behind them), and
    the recognitions ran on the 40 threads that also serve the page: with 40 or more workers a page
    load waited behind photos."""
    import asyncio

    import anyio

    from fervid.serve.pool import ClientGone

    release, calls = threading.Event(), []

    def held(self, data, stream=None, crop=False):
        calls.append(data)
        release.wait(10)
        return {"faces": []}

    monkeypatch.setattr(RecognizerPool, "recognize", held)
    pool = RecognizerPool(workers=1)

    async def gone() -> bool:
        return True

    async def run() -> tuple[int, list]:
        first = asyncio.ensure_future(pool.recognize_in_turn(b"first"))
        left = asyncio.ensure_future(pool.recognize_in_turn(b"left", gone=gone))  # waits behind the first
        while not calls:
            await asyncio.sleep(0.01)
        borrowed = anyio.to_thread.current_default_thread_limiter().borrowed_tokens  # during a recognition
        release.set()
        await first
        with pytest.raises(ClientGone):
            await left
        return borrowed, calls

    borrowed, called = asyncio.run(run())
    assert called == [b"first"], "the photo of a client that left was not recognized"
    assert borrowed == 0, "the page's threads stay free"

    from fastapi import HTTPException

    from fervid.serve.app import recognize_photo

    release.set()
    with pytest.raises(HTTPException) as answer:
        asyncio.run(recognize_photo(pool, b"photo", False, gone))
    assert answer.value.status_code == 499 and answer.value.detail == "the client left before its photo's turn"
