"""Airflow-side adapters of RxVision: operators, hooks, deadline callbacks, listeners.

They wrap the ``rxvision`` library (which imports no Airflow); DAG files only wire them.
"""
