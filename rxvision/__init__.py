"""RxVision: nightly retraining and batch scoring of a pill-image classifier."""

import os

# albumentations checks PyPI for a newer release on import: never at run time here
# (rule: nothing reaches the internet at run time; air-gapped deployments hang on it).
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

# MLflow 3 downloads large artifacts (the ONNX and TorchScript exports) from a proxied
# S3 store in ranged chunks over presigned URLs, each with a fixed 10 s timeout, then
# backs off 2^n seconds per retry. On a loaded machine a chunk of a 45 MB model times
# out and a scoring task stalls for minutes (seen in CI with four mapped shards). One
# stream through the tracking server has no such timeout and is as fast here.
os.environ.setdefault("MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD", "false")

# MLflow draws a progress bar per download: noise in task logs.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
