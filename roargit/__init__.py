"""roargit: git-native lineage for ML and data pipelines."""

__version__ = "0.1.0"
