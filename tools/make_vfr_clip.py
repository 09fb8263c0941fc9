"""Write tests/data/vfr.mp4: a tiny variable-frame-rate clip for the timing tests.

OpenCV's VideoWriter can only write a constant frame rate, so the clip is made once with PyAV
(``pip install av``, not a fervid dependency) and committed. Ten 64x48 frames at the times in
``TIMES`` (ms): the average rate is about 3 fps, so ``frame / fps`` would put frame 5 at 1.6 s
instead of 1.5 s and frame 8 at 2.6 s instead of 3.0 s.
"""

from __future__ import annotations

import fractions
from pathlib import Path

import av
import numpy as np

TIMES = (0, 100, 200, 500, 600, 1500, 1600, 1700, 3000, 3100)
OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "vfr.mp4"


def main() -> None:
    millisecond = fractions.Fraction(1, 1000)
    with av.open(str(OUT), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.time_base = stream.codec_context.time_base = millisecond
        for number, time_ms in enumerate(TIMES):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 20 * number, np.uint8), format="rgb24")
            frame.pts, frame.time_base = time_ms, millisecond
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
