"""Imported by the forkserver of every worker pool (``rxvision.forkserver``), so that each
worker forked from it starts with one OpenCV thread and a warm decoder.

A pool is sized to the cores already (one worker per core, by config); OpenCV's own
thread pool inside each worker then oversubscribes them: on 2 cores, 2 preprocessing
workers spent 4.3 ms of CPU per 240 px photo with OpenCV's default pool against 3.0 ms
with one thread, for the same pixels. It is set here, in the server, before any OpenCV
call made a pool: ``cv2.setNumThreads`` in a process forked from one whose pool has
threads can hang in ``pthread_cond_destroy``.

Then one photo is decoded (``rxvision.data.decoder_warmup``): every pool's workers
decode photos, and the one-time set-up of a first decode (~100-150 ms) is paid once
here instead of in each worker. Whichever pool starts the server (the synthetic
generator's in a script that first draws its photos), the workers are warm.
"""

from __future__ import annotations

import cv2

cv2.setNumThreads(1)

# after the thread count: the warm-up's OpenCV calls must not start a pool
from rxvision.data.decoder_warmup import warm_up  # noqa: E402

warm_up()
