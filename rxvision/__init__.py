"""RxVision: nightly retraining and batch scoring of a pill-image classifier."""

import os

# albumentations checks PyPI for a newer release on import: never at run time here
# (rule: nothing reaches the internet at run time; air-gapped deployments hang on it).
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
