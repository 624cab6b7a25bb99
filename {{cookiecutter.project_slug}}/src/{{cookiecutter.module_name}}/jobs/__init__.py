"""The jobs: one module per command (train, tune, reproduce, monitor and its report).

No job imports another (import-linter checks it): what two of them share lives below,
in the store, the runtime or the core.
"""
