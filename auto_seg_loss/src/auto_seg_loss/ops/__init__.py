"""Elementwise and morphological building blocks of the surrogates."""
