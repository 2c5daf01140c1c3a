"""RxVision: nightly retraining and batch scoring of a pill-image classifier."""
