"""A small model zoo trained here on the grocery photos of ``../shared/data``, for the compiler's
generality table (``benchmarks.generality``): ``photos`` (label set and fixed split), ``nets``
(torch definitions), ``train`` (training and ONNX export), ``store`` (the cache of trained models)."""
