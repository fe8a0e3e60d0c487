"""prober: an active connectivity prober mesh for Kubernetes."""

#: The one place the version is written: pyproject.toml reads it from here
#: (``[tool.hatch.version]``). A literal, not ``importlib.metadata``, which costs every
#: process ~6 MB of memory (the agent's budget is 40 MB) for one string.
__version__ = "0.1.0"
