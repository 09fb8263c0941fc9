"""``--engine ray`` on a local 2-CPU Ray gives the same rows as the local engine (labels equal, probabilities within 1e-5)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pyarrow", reason="fervid analyze needs pyarrow (the 'scale' extra)")
pd = pytest.importorskip("pandas", reason="fervid analyze needs pandas (the 'scale' extra)")
ray = pytest.importorskip("ray", reason="the Ray engine needs ray[data]: pip install 'fervid[scale]'")

from conftest import fer2013_zip  # noqa: E402
from fervid.analyze import AnalyzeOptions, analyze  # noqa: E402
from fervid.labels import EXPRESSIONS  # noqa: E402
from test_analyze import build_archive  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")  # Ray's own, not ours
PROBABILITIES = [f"prob_{name}" for name in EXPRESSIONS]
KEYS = ["source", "frame", "face_id"]


def test_ray_engine_matches_the_local_engine(tmp_path: Path, capfd: pytest.CaptureFixture[str], recwarn: pytest.WarningsRecorder) -> None:
    fer2013_zip()
    archive = build_archive(tmp_path / "archive")
    # vfr-gops.mp4: a variable frame rate with a keyframe every 6 frames (48 frames, no face), where a
    # seek by frame number lands on another frame: one unit, read through, the same frames on Ray.
    vfr = Path(__file__).parent / "data" / "vfr-gops.mp4"
    # b.mp4 inside a zip: each worker extracts its own copy of it to read its segment.
    with zipfile.ZipFile(tmp_path / "clips.zip", "w") as zipped:
        zipped.write(archive / "clips" / "b.mp4", "b.mp4")
    inputs = [archive / "photos" / "one.png", archive / "photos" / "two.jpg", archive / "clips" / "a.mp4", archive / "broken" / "corrupt.jpg", vfr,
              tmp_path / "clips.zip"]
    options = AnalyzeOptions(segment_s=1.0)  # a.mp4 (40 frames at 15 FPS) becomes three segments on different workers, b.mp4 (30) two
    local = analyze(inputs, tmp_path / "local.parquet", options)
    try:
        distributed = analyze(inputs, tmp_path / "ray.parquet", options, engine="ray", ray_cpus=2)
    finally:
        ray.shutdown()
    assert not ray.is_initialized()
    # A rerun of a finished run has nothing to do: it failed with Ray's "parallelism must be -1 or > 0".
    again = analyze(inputs, tmp_path / "ray.parquet", options, engine="ray", ray_cpus=2)
    assert again.skipped_units == again.units == 7 and again.frames == 0 and not ray.is_initialized()
    assert "core_worker" not in capfd.readouterr().err  # no warnings from Ray's C++ core on the terminal
    assert [str(w.message) for w in recwarn if "ray_remote_args" in str(w.message)] == []  # weighed in no_restarts, not shown per run
    assert distributed.units == local.units == 7 and distributed.frames == local.frames == 42 + 48 + 30  # one photo batch, 6 video units
    assert local.summary.to_pandas().set_index("source").loc[f"{tmp_path / 'clips.zip'}!b.mp4", "faces"] == 24  # frames 3-26: one face

    local_rows = pd.read_parquet(tmp_path / "local.parquet")
    ray_rows = pd.read_parquet(tmp_path / "ray.parquet")
    assert len(local_rows) > 40 and local_rows[KEYS].equals(local_rows.sort_values(KEYS)[KEYS])  # the file is sorted
    exact = [column for column in local_rows.columns if column not in (*PROBABILITIES, "confidence")]
    pd.testing.assert_frame_equal(ray_rows[exact], local_rows[exact])
    np.testing.assert_allclose(ray_rows[[*PROBABILITIES, "confidence"]], local_rows[[*PROBABILITIES, "confidence"]], atol=1e-5)
    assert set(ray_rows["segment"]) == {0, 1, 2}

    columns = ["source", "kind", "status", "error", "frames", "faces", "segments", "fingerprint", "model_version"]
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "ray.summary.parquet")[columns], pd.read_parquet(tmp_path / "local.summary.parquet")[columns])


def test_restarts_are_turned_off_only_where_map_batches_still_takes_actor_options() -> None:
    from fervid.analyze.ray_engine import no_restarts

    def with_options(fn: object, *, num_cpus: float | None = None, **ray_remote_args: object) -> None: ...
    def named_only(fn: object, *, num_cpus: float | None = None) -> None: ...

    assert no_restarts(with_options) == {"max_restarts": 0}
    assert no_restarts(named_only) == {}
