"""Executors: where the per-file work of a batch runs.

``run_batch(..., executor=None)`` processes files in local threads (``--jobs``).
An executor object takes over only the processing of the planned files; planning
(mirrored tree, format rules, skip existing, collisions), the report and the
progress bar stay in :mod:`cakfx.batch`. Its contract::

    executor.run(todo, out_format, record)

``todo`` is the list of ``(input, output)`` paths to process, ``record(result)``
is called once per file with its :class:`cakfx.batch.FileResult`, in any order.

* :class:`cakfx.executors.ray.RayExecutor` -- Ray actors on one machine or a cluster
  (``cakfx process --executor ray``, the ``cakfx[ray]`` extra).
"""
