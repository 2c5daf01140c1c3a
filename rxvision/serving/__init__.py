"""Serving: the model contract and its exports, quantization, and the batch scorer.

Submodules are imported on demand (torch, ONNX Runtime and MLflow take seconds):
``rxvision.serving.model`` (ServingModel, exports, runtimes), ``.quantize``,
``.batch`` (``plan_shards``, ``score_shard``, ``finalize_scoring``, ``score_batch``),
``.circuit`` (CircuitBreaker) and ``.metrics``.
"""
