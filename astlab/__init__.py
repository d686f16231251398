__version__ = "0.1.0"

# The public API. Hand-maintained lines: nbdev-export rewrites only the version line above and keeps these.
# Imported on first use (PEP 562), so `import astlab` stays light and the submodules' `import astlab` has no cycle.
_API = {'SparseStep': 'api', 'PrunedDataset': 'api'}
__all__ = list(_API)

def __getattr__(name):
    if name in _API:
        import importlib
        return getattr(importlib.import_module(f'.{_API[name]}', __name__), name)
    raise AttributeError(f"module 'astlab' has no attribute {name!r}")
