"""What the Airflow DAGs' tasks do, as plain functions (no Airflow imports).

``nightly`` holds the retraining steps, ``scoring`` the batch scoring steps, ``alerts``
the on-call sinks, ``status`` the summary for people; ``config`` reads
``configs/pipeline.yaml``.
"""
