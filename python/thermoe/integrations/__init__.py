"""Integrations of thermoe with other libraries (transformers)."""
