"""AutoMoE: NAS for dense and Mixture-of-Experts Transformers (application layer)."""

__version__ = "0.1.0"

_LAZY = {"load_subnet": "automoe.export", "ExportedSubnet": "automoe.export"}


def __getattr__(name: str):
    """``automoe.load_subnet`` imports torch only when first used (``import automoe`` stays
    cheap and torch-free)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'automoe' has no attribute {name!r}")
