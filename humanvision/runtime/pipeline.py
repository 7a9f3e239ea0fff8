"""Overlapped batch inference: read and crop, the model, and decoding run at the same time (no torch needed).

A top-down pose model sees a stream of crops, but its users have a stream of images (files, video frames), each
with zero or more people. :func:`overlapped` turns the second into the first and back::

    items --(feeder thread: iterate the source, e.g. decode video frames)-->
          --(``workers`` threads: prepare(item) -> Prepared(crops, context): read, detect, crop, normalise)-->
          --(model thread: crops of consecutive items cut into batches of exactly ``batch_size``; forward(batch))-->
          --(the caller's thread: finish(context, outputs) per item, in input order)--> yielded results

so image decoding, cropping and heatmap decoding hide behind the model instead of adding to it (issue 15, claim 1:
``benchmarks/pipeline.py`` measures end-to-end images/s against the model-only throughput at the same batch size).
The order of the results is the order of the items whatever the number of workers; an item's crops may span two
batches and several items share one. ``workers=0`` runs the same steps one after the other in the calling thread
(the reference the overlapped run is tested against, and the simplest thing to debug).

Errors are not lost and not reordered: an exception raised while preparing, running or finishing an item is
raised by the iteration at that item's place, after every earlier item's result was yielded; the threads then
stop. Closing the generator early (``break``) stops them too. Queues are bounded (``prefetch`` items), so a slow
model never makes the readers hold the whole input in memory.

Works for numpy (onnxruntime, :meth:`humanvision.runtime.PoseEstimator.predict_many`) and torch tensors (the
PyTorch path of ``humanvision infer``; torch is imported only when tensors come): crops and outputs are joined
with ``numpy.concatenate`` or ``torch.cat``, and outputs may be an array or a tuple of arrays, batch first.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Prepared", "overlapped"]

_END = object()


@dataclass
class Prepared:
    """What ``prepare`` returns for one item: its crops (``(n, ...)`` array or tensor, ``n`` may be 0, or None for
    none) and whatever ``finish`` needs besides the model outputs (boxes, crop transforms, the image, a name)."""

    crops: Any
    context: Any = None

    @property
    def count(self) -> int:
        return 0 if self.crops is None else len(self.crops)


class _Failed:
    """An exception travelling down the stages in the place of the item that raised it."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


def _slice(out: Any, a: int, b: int) -> Any:
    return tuple(o[a:b] for o in out) if isinstance(out, tuple) else out[a:b]


def _concat(parts: list) -> Any:
    """numpy arrays with numpy, tensors with torch (imported only when a tensor is there)."""
    if isinstance(parts[0], np.ndarray):
        return np.concatenate(parts)
    import torch

    return torch.cat(parts)


def _join(parts: list) -> Any:
    if len(parts) == 1:
        return parts[0]
    if isinstance(parts[0], tuple):
        return tuple(_concat([p[i] for p in parts]) for i in range(len(parts[0])))
    return _concat(parts)


class _Batcher:
    """Cuts the crops of consecutive items into batches of ``batch_size``; hands back each item with its outputs
    once all its crops went through the model (items without crops pass straight through, in order)."""

    def __init__(self, forward: Callable, batch_size: int, emit: Callable) -> None:
        self.forward, self.batch_size, self.emit = forward, batch_size, emit
        self.items: list[list] = []  # [prepared, number of crops still to run, output pieces]
        self.crops: list = []  # crop arrays not yet run (whole items' or the rest of a split one)
        self.queued = 0

    def add(self, prepared: Prepared | _Failed) -> None:
        if not isinstance(prepared, (Prepared, _Failed)):
            raise TypeError(f"prepare must return a humanvision.runtime.pipeline.Prepared, got "
                            f"{type(prepared).__name__}")
        n = 0 if isinstance(prepared, _Failed) else prepared.count
        self.items.append([prepared, n, []])
        if n:
            self.crops.append(prepared.crops)
            self.queued += n
        while self.queued >= self.batch_size:
            self._run(self.batch_size)
        self._emit_done()

    def flush(self) -> None:
        while self.queued:
            self._run(min(self.queued, self.batch_size))
        self._emit_done()

    def _run(self, size: int) -> None:
        taken, n = [], 0
        while n < size:
            c = self.crops[0]
            k = min(len(c), size - n)
            taken.append(c[:k])
            n += k
            if k == len(c):
                self.crops.pop(0)
            else:
                self.crops[0] = c[k:]
        self.queued -= size
        out = self.forward(_join(taken))
        pos = 0
        for item in self.items:  # hand the outputs to the items waiting for crops, oldest first
            if pos == size:
                break
            if item[1] == 0:
                continue
            k = min(item[1], size - pos)
            item[2].append(_slice(out, pos, pos + k))
            item[1] -= k
            pos += k

    def _emit_done(self) -> None:
        while self.items and self.items[0][1] == 0:
            prepared, _, pieces = self.items.pop(0)
            if isinstance(prepared, _Failed):
                self.emit(prepared)
            else:
                self.emit((prepared, _join(pieces) if pieces else None))


def overlapped(items: Iterable, prepare: Callable[[Any], Prepared], forward: Callable[[Any], Any],
               finish: Callable[[Any, Any], Any], *, batch_size: int = 32, workers: int = 1,
               prefetch: int = 0) -> Iterator:
    """Yield ``finish(context, outputs)`` for every item, in order (see the module docstring).

    Args:
        items: any iterable (file paths, ``(name, frame)`` pairs, ...), iterated in a thread of its own.
        prepare: ``item -> Prepared``, run by ``workers`` threads at once (OpenCV, numpy, onnxruntime and torch
            release the GIL in their heavy calls).
        forward: a batch of at most ``batch_size`` crops -> outputs (an array or a tuple of arrays with the batch
            first), always called from one thread.
        finish: ``(context, outputs)`` -> result, in the caller's thread; ``outputs`` holds this item's rows of the
            model outputs (``None`` for an item without crops).
        batch_size: crops per ``forward`` call (the last one may be smaller).
        workers: preparing threads; 0: everything in the calling thread, one step after another.
        prefetch: items prepared ahead of the model (default ``2 * batch_size + 2 * workers``).
    """
    batch_size = max(1, int(batch_size))
    if workers <= 0:
        return _serial(items, prepare, forward, finish, batch_size)
    return _threaded(items, prepare, forward, finish, batch_size, int(workers),
                     int(prefetch) or 2 * batch_size + 2 * int(workers))


def _serial(items, prepare, forward, finish, batch_size) -> Iterator:
    ready: list = []
    batcher = _Batcher(forward, batch_size, ready.append)
    source = iter(items)
    error = None
    while error is None:
        try:  # reading or preparing an item failed: the earlier items' results first, as in the threaded run
            prepared = prepare(next(source))
        except StopIteration:
            break
        except Exception as e:  # noqa: BLE001
            error = e
            break
        batcher.add(prepared)
        while ready:
            prepared, outputs = ready.pop(0)
            yield finish(prepared.context, outputs)
    batcher.flush()
    while ready:
        prepared, outputs = ready.pop(0)
        yield finish(prepared.context, outputs)
    if error is not None:
        raise error


def _threaded(items, prepare, forward, finish, batch_size, workers, prefetch) -> Iterator:
    stop = threading.Event()
    futures: queue.Queue = queue.Queue(maxsize=prefetch)  # Future | _Failed | _END, in input order
    results: queue.Queue = queue.Queue(maxsize=prefetch)  # (Prepared, outputs) | _Failed | _END, in input order
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hv-prepare")

    def put(q: queue.Queue, value: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def feed() -> None:  # iterate the source (video decoding happens here) and queue the preparations
        try:
            for item in items:
                if not put(futures, pool.submit(prepare, item)):
                    return
        except BaseException as e:  # noqa: BLE001  (handed to the caller at this item's place)
            put(futures, _Failed(e))
            return
        put(futures, _END)

    def run_model() -> None:
        batcher = _Batcher(forward, batch_size, lambda r: put(results, r))
        try:
            while not stop.is_set():
                try:
                    f = futures.get(timeout=0.1)
                except queue.Empty:
                    continue
                if f is _END:
                    break
                if isinstance(f, _Failed):
                    batcher.flush()
                    batcher.add(f)
                    return
                try:
                    prepared = f.result()
                except BaseException as e:  # noqa: BLE001
                    batcher.flush()
                    batcher.add(_Failed(e))
                    return
                batcher.add(prepared)
            batcher.flush()
        except BaseException as e:  # noqa: BLE001  (the model failed: after every result before it)
            put(results, _Failed(e))
            return
        put(results, _END)

    threads = [threading.Thread(target=feed, name="hv-feed", daemon=True),
               threading.Thread(target=run_model, name="hv-model", daemon=True)]
    for t in threads:
        t.start()
    try:
        while True:
            r = results.get()
            if r is _END:
                return
            if isinstance(r, _Failed):
                raise r.error
            prepared, outputs = r
            yield finish(prepared.context, outputs)
    finally:
        stop.set()
        for t in threads:
            t.join()
        while True:  # preparations still queued: cancel or wait, so no thread outlives the call
            try:
                f = futures.get_nowait()
            except queue.Empty:
                break
            if isinstance(f, Future):
                f.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
