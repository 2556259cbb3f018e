"""The contract suite over every engine x transport this project supports."""

from taskbridge.testing.contract import *  # noqa: F403
