"""Training: the LightningModule, its data, callbacks, checkpoints and tracking.

``rxvision.train.run.train(cfg, data)`` is the entry point; ``rxvision.train.config``
holds the typed config. Submodules import torch and Lightning, so this package imports
nothing eagerly.
"""
