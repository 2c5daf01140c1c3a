"""Serving: the model contract and its exports, quantization, and the batch scorer.

Submodules are imported on demand (torch, ONNX Runtime and MLflow take seconds).

The model: ``.model_contract`` (ServingModel, LoadedModel), ``.model_loading`` (from
MLflow, cached), ``.predictors`` (the runtimes), ``.exports`` (TorchScript, ONNX and
their parity), ``.runtime_selection``, ``.quantize``, ``.batch_tuning``,
``.version_export`` (all of it for a registered version), ``.image_folder`` and
``.evaluation``.

The batch scorer: ``.scoring_config``, ``.plan`` (``plan_shards``), ``.shard``
(``score_shard``), ``.shard_scorer`` and ``.fetch`` (inside a shard), ``.model_pool``
(primary and fallback), ``.circuit`` (CircuitBreaker), ``.predictions`` (the rows),
``.cache`` (inference cache), ``.processed`` (incremental runs), ``.finalize``
(``finalize_scoring``), ``.scoring_run`` (``score_batch``: all of it in one process),
``.metrics`` and the review gallery (``.review_gallery``, ``.review_models``,
``.review_page``). Objects on S3 or local disk: ``rxvision.storage.uri_store``.
"""
