"""The taskbridge contract suite, installable as a pytest plugin for users' own CI.

``taskbridge contract --engine celery --broker redis://...`` runs it; so does
``pytest --pyargs taskbridge.testing.contract --taskbridge-engine celery --taskbridge-broker URL``.
"""

from .harness import KNOWN, Combination, Harness, unavailable_reason

__all__ = ["KNOWN", "Combination", "Harness", "unavailable_reason"]
