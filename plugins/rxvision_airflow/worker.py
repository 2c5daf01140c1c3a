"""Which worker ran a task: ``[core] hostname_callable`` for the ``scale`` profile.

Airflow records ``get_hostname()`` on each task instance. Two Celery workers on one host
would both record the host's name; with ``RXVISION_WORKER_NAME`` set (the stack sets it
per worker) the task instance says ``name@host``, the worker's Celery node name.
"""

from __future__ import annotations

import os
import socket


def hostname() -> str:
    """``<worker>@<host>`` inside a named worker, else the host's fully qualified name."""
    name = os.environ.get("RXVISION_WORKER_NAME")
    host = socket.getfqdn()
    return f"{name}@{socket.gethostname()}" if name else host
