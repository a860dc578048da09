"""Training backends (PyTorch, TensorFlow, LiteRT).

This package's own import must stay free of frameworks: each backend module
imports its framework only when it is loaded, and only the chosen one is.
"""
