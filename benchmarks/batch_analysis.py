"""Measure ``fervid analyze``: local vs ray throughput on one archive, and peak RSS on a long 640x480 video.

    FERVID_FER2013_ZIP=../shared/data/fer2013.zip python benchmarks/batch_analysis.py --work /tmp/bench

Videos are generated frame by frame (never held in memory) from real FER2013 faces the detector finds.
Prints a JSON report; docs/performance.md ("Batch analysis") quotes it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import detectable_faces, textured_background  # noqa: E402

WIDTH, HEIGHT, FPS, SIZE = 640, 480, 30.0, 150


def write_face_video(path: Path, seconds: float, faces: list[np.ndarray], seed: int) -> None:
    """A 640x480 mp4 with ``faces`` drifting slowly around, written one frame at a time."""
    background = textured_background(HEIGHT, WIDTH, seed=seed)
    bigs = [cv2.resize(face, (SIZE, SIZE), interpolation=cv2.INTER_CUBIC)[..., None] for face in faces]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (WIDTH, HEIGHT))
    for index in range(int(seconds * FPS)):
        frame = background.copy()
        for number, big in enumerate(bigs):
            phase = index / FPS / 8 + number * 2.1
            x = int(40 + number * 300 + 40 * np.sin(phase))
            y = int(100 + 60 * np.cos(phase * 0.7))
            frame[y : y + SIZE, x : x + SIZE] = big
        writer.write(frame)
    writer.release()


def build_archive(root: Path, videos: int, seconds: float, photos: int) -> None:
    faces = detectable_faces(6)
    (root / "photos").mkdir(parents=True, exist_ok=True)
    for number in range(videos):
        write_face_video(root / f"video-{number}.mp4", seconds, faces[number % 6 : number % 6 + 1 + number % 2], seed=number)
    for number in range(photos):
        frame = textured_background(HEIGHT, WIDTH, seed=100 + number)
        big = cv2.resize(faces[number % 6], (SIZE, SIZE), interpolation=cv2.INTER_CUBIC)
        frame[100 : 100 + SIZE, 200 : 200 + SIZE] = big[..., None]
        cv2.imwrite(str(root / "photos" / f"photo-{number:03d}.jpg"), frame)


def measure(engine: str, archive: Path, out: Path) -> dict:
    from fervid.analyze import AnalyzeOptions, analyze

    started = time.perf_counter()
    report = analyze([archive], out, AnalyzeOptions(segment_s=5.0), engine=engine, ray_cpus=2 if engine == "ray" else None)
    wall = time.perf_counter() - started
    if engine == "ray":
        import ray

        ray.shutdown()
    return {"engine": engine, "wall_s": round(wall, 1), "frames": report.frames, "faces": report.faces,
            "frames_per_s": round(report.frames / wall, 2), "faces_per_s": round(report.faces / wall, 2),
            "stage_s": {stage: round(seconds, 1) for stage, seconds in report.timings.items()}}


def peak_rss(video: Path, out: Path, every: int, segment_s: float) -> dict:
    """Run the real CLI on ``video`` and sample its RSS twice a second (VmHWM at the end is the peak)."""
    command = [str(Path(sys.executable).parent / "fervid"), "analyze", str(video), "--out", str(out), "--every", str(every), "--segment-s", str(segment_s)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    samples, peak = [], 0
    started = time.perf_counter()

    def status() -> dict:
        fields = {}
        for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            fields[key] = value.strip()
        return fields

    while process.poll() is None:
        try:
            fields = status()
            rss = int(fields["VmRSS"].split()[0]) // 1024
            peak = max(peak, int(fields["VmHWM"].split()[0]) // 1024)
            samples.append((round(time.perf_counter() - started, 1), rss))
        except (FileNotFoundError, KeyError, ProcessLookupError):
            pass
        time.sleep(0.5)
    stderr = process.stderr.read() if process.stderr else ""
    quarter = [rss for _, rss in samples[len(samples) // 4 : len(samples) // 4 + 10]]
    last = [rss for _, rss in samples[-10:]]
    return {"every": every, "segment_s": segment_s, "wall_s": round(time.perf_counter() - started, 1), "peak_rss_mb": peak,
            "rss_mb_at_25pct": int(np.median(quarter)) if quarter else None, "rss_mb_at_end": int(np.median(last)) if last else None,
            "rss_mb_by_tenth": [samples[min(len(samples) - 1, len(samples) * k // 10)][1] for k in range(11)] if samples else [],
            "samples": len(samples), "returncode": process.returncode, "stderr_tail": stderr.strip().splitlines()[-2:]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", type=Path, default=Path("/tmp/fervid-batch-bench"))
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--photos", type=int, default=20)
    parser.add_argument("--long-minutes", type=float, default=10.0)
    parser.add_argument("--long-every", type=int, default=10)
    parser.add_argument("--long-segment-s", type=float, default=300.0)
    parser.add_argument("--skip", nargs="*", default=[])
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    results: dict = {"cpus": os.cpu_count()}
    archive = args.work / "archive"
    if "throughput" not in args.skip:
        if not archive.exists():
            build_archive(archive, args.videos, args.seconds, args.photos)
        for engine in ("local", "ray"):
            target = args.work / f"{engine}.parquet"
            subprocess.run(["rm", "-rf", str(target), f"{target}.parts"], check=True)
            results[engine] = measure(engine, archive, target)
            print(json.dumps(results[engine]), flush=True)
    if "rss" not in args.skip:
        video = args.work / f"long-{args.long_minutes:g}min.mp4"
        if not video.exists():
            started = time.perf_counter()
            write_face_video(video, args.long_minutes * 60, detectable_faces(2), seed=1)
            results["long_video_written_s"] = round(time.perf_counter() - started, 1)
        results["long_video_mb"] = round(video.stat().st_size / 2**20, 1)
        target = args.work / "long-out"
        subprocess.run(["rm", "-rf", str(target)], check=True)
        results["rss"] = {"minutes": args.long_minutes, **peak_rss(video, target, args.long_every, args.long_segment_s)}
        print(json.dumps(results["rss"]), flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
