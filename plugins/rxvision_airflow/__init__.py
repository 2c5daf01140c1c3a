"""Airflow-side adapters of RxVision: connections, alerting, per-task SLAs, the train
operator and the duration listener.

They wrap the ``rxvision`` library (which imports no Airflow); DAG files only wire them.
This package is importable on every Airflow component (``plugins/`` is on PYTHONPATH),
which the triggerer needs for the deadline callbacks.
"""
