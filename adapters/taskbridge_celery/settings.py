"""Settings only the Celery adapter reads: the ``celery`` section of taskbridge's settings
(``[tool.taskbridge.celery]`` in pyproject.toml, ``[celery]`` in taskbridge.toml, ``TASKBRIDGE_CELERY_*``)."""

from taskbridge.engine_settings import CelerySettings

__all__ = ["CelerySettings"]
