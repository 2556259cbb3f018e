"""Settings only the Dramatiq adapter reads: the ``dramatiq`` section of taskbridge's settings
(``[tool.taskbridge.dramatiq]`` in pyproject.toml, ``[dramatiq]`` in taskbridge.toml, ``TASKBRIDGE_DRAMATIQ_*``)."""

from taskbridge.engine_settings import DramatiqSettings

__all__ = ["DramatiqSettings"]
