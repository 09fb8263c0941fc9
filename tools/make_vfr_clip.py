"""Write tests/data/vfr.mp4 and vfr-gops.mp4: tiny variable-frame-rate clips for the timing tests.

OpenCV's VideoWriter can only write a constant frame rate, so the clip is made once with PyAV
(``pip install av``, not a fervid dependency) and committed. Ten 64x48 frames, frame ``n`` of grey
level ``20 n``, at the times in ``TIMES`` (ms): the average rate is about 3 fps, so ``frame / fps``
would put frame 5 at 1.6 s instead of 1.5 s and frame 8 at 2.6 s instead of 3.0 s.
"""

from __future__ import annotations

import fractions
from pathlib import Path

import numpy as np

try:
    import av
except ImportError:
    raise SystemExit("make_vfr_clip.py needs PyAV, which fervid does not install: pip install av") from None

TIMES = (0, 100, 200, 500, 600, 1500, 1600, 1700, 3000, 3100)
DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
# vfr-gops.mp4: 48 frames, a keyframe every 6, the first 24 at 60 fps and the rest at 20 fps (times
# in ms below), as a phone's clip that slows down: seeking by frame number lands on the wrong frame.
GOP_TIMES = tuple(round(1000 * n / 60) for n in range(24)) + tuple(400 + 50 * n for n in range(24))


def write(out: Path, times: tuple[int, ...], gop: int) -> None:
    """Frames of one grey level each at ``times``, readable after a lossy codec: frame ``n`` is ``20 n`` in
    vfr.mp4 (0, 20, ..., 180) and ``5 n`` in vfr-gops.mp4 (0, 5, ..., 235)."""
    millisecond = fractions.Fraction(1, 1000)
    with av.open(str(out), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.time_base = stream.codec_context.time_base = millisecond
        stream.codec_context.gop_size = gop
        for number, time_ms in enumerate(times):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), (20 if out.name == "vfr.mp4" else 5) * number, np.uint8),
                                               format="rgb24")
            frame.pts, frame.time_base = time_ms, millisecond
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    print(f"wrote {out}")


def main() -> None:
    write(DATA / "vfr.mp4", TIMES, gop=12)
    write(DATA / "vfr-gops.mp4", GOP_TIMES, gop=6)


if __name__ == "__main__":
    main()
