"""The Ray Data engine: units (image batches, video segments) spread over one single-threaded worker per CPU.

Each worker is an actor of :class:`UnitWorker`, which loads the ONNX model and the Haar cascade once
and pins ONNX Runtime and OpenCV to one thread, so N workers use N cores without oversubscribing
them. Workers return each unit's rows; the driver writes the parts, so only the driver needs OUT.
Workers read the inputs themselves: on a cluster, every node must see them at the same path.
"""

from __future__ import annotations

import inspect
import logging
import os
import pickle
import warnings
from collections.abc import Callable, Iterator

import numpy as np

from fervid.analyze.options import AnalyzeOptions
from fervid.analyze.units import Unit, UnitResult
from fervid.errors import FervidError, install_hint

WORKER_ENV = {"OMP_NUM_THREADS": "1", "OPENCV_FFMPEG_LOGLEVEL": "-8"}


class UnitWorker:
    """A Ray Data callable class: built once per worker, then called with batches of pickled units."""

    def __init__(self, options: AnalyzeOptions) -> None:
        import cv2

        from fervid.analyze.analyzer import Analyzer
        from fervid.runtime.recognizer import Recognizer

        cv2.setNumThreads(1)
        self.analyzer = Analyzer(options, Recognizer(options.model, threads=1, **options.recognizer_settings()))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = [pickle.dumps(self.analyzer.run(pickle.loads(payload))) for payload in batch["unit"]]
        return {"result": np.array(results, dtype=object)}


def actor_plan(cpus: float, units: int) -> tuple[int, float]:
    """(workers, CPUs reserved per worker): one worker per CPU, no more than there are units, and one
    CPU left unreserved for Ray Data's own tasks (with whole CPUs per actor a 2-CPU Ray hangs)."""
    workers = max(1, min(units, int(cpus)))
    return workers, max(0.1, min(1.0, (cpus - 1) / workers))


def no_restarts(map_batches: Callable[..., object]) -> dict[str, int]:
    """The actor option that turns restarts off, where ``map_batches`` still takes actor options.

    On a Ray we started ourselves a worker dies only with this machine, so actor restarts buy
    nothing, and with them on, Ray's core prints an error-looking line about the restart of an actor
    with constructor arguments (ray-project/ray#53727); a cluster keeps Ray's restarts. Ray 2.60
    deprecates actor options passed as extra keyword arguments (removal announced for 2.64) and names
    no replacement for ``max_restarts``, so once they are gone Ray's default is kept rather than
    ``map_batches`` failing.
    """
    parameters = inspect.signature(map_batches).parameters.values()
    takes_options = any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters)
    return {"max_restarts": 0} if takes_options else {}


def run_ray(units: list[Unit], options: AnalyzeOptions, on_frames: Callable[[int], None] | None = None,
            address: str | None = None, cpus: int | None = None) -> Iterator[UnitResult]:
    """Results of ``units`` as workers finish them (any order); starts a local Ray unless ``address`` is given."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise FervidError(f"--engine ray needs the 'scale' extra: {install_hint('scale')}") from None
    started = False
    if not ray.is_initialized():
        environment = {"env_vars": WORKER_ENV}
        try:
            if address:
                ray.init(address=address, runtime_env=environment, log_to_driver=False, logging_level=logging.ERROR)
            else:
                ray.init(num_cpus=cpus or os.cpu_count() or 1, include_dashboard=False, runtime_env=environment,
                         log_to_driver=False, logging_level=logging.ERROR)
        except ConnectionError as error:
            raise FervidError(f"--ray-address {address}: could not join the Ray cluster ({error})") from None
        started = True
    try:
        logging.getLogger("ray.data").setLevel(logging.ERROR)  # fervid draws its own progress bar
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        workers, cpus_per_worker = actor_plan(ray.cluster_resources().get("CPU", 1), len(units))
        dataset = ray.data.from_items([{"unit": pickle.dumps(unit)} for unit in units], override_num_blocks=len(units))
        restarts = {} if address else no_restarts(ray.data.Dataset.map_batches)
        with warnings.catch_warnings():  # the deprecation no_restarts weighs, said once in its docstring, not on every run
            warnings.filterwarnings("ignore", message=r"`ray_remote_args` is deprecated")
            results = dataset.map_batches(
                UnitWorker, fn_constructor_kwargs={"options": options}, batch_size=1, batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=cpus_per_worker, **restarts,  # type: ignore[arg-type]
            )
        for batch in results.iter_batches(batch_size=1, batch_format="numpy", prefetch_batches=0):
            for payload in batch["result"]:
                result: UnitResult = pickle.loads(payload)
                if on_frames is not None:
                    on_frames(result.frames)
                yield result
    finally:
        if started:
            ray.shutdown()
            # Workers stopped by the shutdown (Ctrl+C) left their video copies; the next run would sweep them.
            from fervid.analyze.video import sweep_copies

            sweep_copies()
