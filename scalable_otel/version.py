"""The package's version, in a module of its own that imports nothing.

The one place it is written: the package re-exports it (`scalable_otel.__version__`), the
build reads it from here (pyproject.toml's `[tool.setuptools.dynamic]`), and the modules
that stamp it on what they make (the instrumentation scope of spans, metrics and logs,
run.json's `versions`, the HTML report's footer) import it from here, so that the layer
contracts see the import.
"""

__version__ = "0.1.0"
