"""The runtime: a loaded model, its typed input, and what it scores recorded.

Shared by serving and batch scoring (which never import each other): loading a model
and choosing its fast path, the signature's typed frames, the inference log, live drift.
"""
