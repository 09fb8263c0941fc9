"""``fervid serve``: the browser app (live webcam, photo upload), the REST API and the frame WebSocket.

Needs the 'serve' extra (FastAPI, uvicorn). ``create_app`` (``fervid.serve.app``) builds the app from
``pool`` (the Recognizers), ``uploads`` (photo uploads) and ``frames`` (the frame WebSocket);
``fervid.serve.server`` runs it; ``fervid.serve.loadtest`` measures it.
"""

import os

# A 10 MB PNG can unpack to gigabytes: OpenCV refuses images of more pixels than this before
# allocating them. OpenCV reads the variable once (4.14: as cv2 loads; older: at its first decode), so
# it is set here, before fervid.serve.app imports cv2.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(64 * 1024 * 1024))

from fervid.serve.app import create_app  # noqa: E402

__all__ = ["create_app"]
