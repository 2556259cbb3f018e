"""Observability: what a worker tells the outside about its jobs.

``events`` (hooks on every start and outcome), ``metrics`` (Prometheus names and labels fed by
the events), ``multiprocess`` (one set of metrics over every process a worker runs jobs in),
``depth`` (queue-depth gauges read from the broker), ``server`` (the ``/metrics`` endpoint),
``error_reporting`` (Sentry) and ``logging`` (passwords masked in log lines). Nothing here is
imported by ``import taskbridge.observability``: each module loads what it needs when used.
"""
