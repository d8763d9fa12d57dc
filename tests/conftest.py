"""Session-wide test settings: keep MLflow offline and quiet, keep caches inside the test run.

A test that needs an optional module or a shared fixture asks ``pipeline.testing.require_module`` /
``require_fixture``: they skip locally and fail under ``CI=true``, so CI never passes by skipping.
"""

import os

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
