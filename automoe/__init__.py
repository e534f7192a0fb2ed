"""AutoMoE: NAS for dense and Mixture-of-Experts Transformers (application layer)."""

__version__ = "0.1.0"
