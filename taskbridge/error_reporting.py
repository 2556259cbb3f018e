"""Error reporting (Sentry), under the name the documentation uses: ``taskbridge.error_reporting.install()``.

The code lives in :mod:`taskbridge.observability.error_reporting`; this module is the same API.
"""

from __future__ import annotations

from .observability.error_reporting import available, install, uninstall

__all__ = ["available", "install", "uninstall"]
