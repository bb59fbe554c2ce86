"""The coldchain compiler: a registered model -> signed per-target bundles."""
