"""The taskbridge contract suite, installable as a pytest plugin for users' own CI.

``taskbridge contract --engine celery --broker redis://...`` runs it; so does
``pytest --pyargs taskbridge.testing.contract --taskbridge-engine celery --taskbridge-broker URL``.
The plugin's ``job_registry`` fixture (and :func:`isolated_jobs`) keeps the jobs a test declares
from outliving it.
"""

from .harness import KNOWN, Combination, Harness, unavailable_reason
from .isolation import isolated_jobs

__all__ = ["KNOWN", "Combination", "Harness", "isolated_jobs", "unavailable_reason"]
