"""Every benchmark on every available Redis/RabbitMQ combination, in one run: a table and a chart.

    .venv/bin/python benchmarks/run.py            # 20,000 jobs per measurement, 3 rounds (medians)
    .venv/bin/python benchmarks/run.py --quick    # 3,000 jobs, 1 round: a few minutes

For each combination it runs ``bench_celery.py`` / ``bench_dramatiq.py`` (raw engine and taskbridge
on the same broker, in the same run; Celery also against raw Celery on its own delivery defaults),
``bench_latency.py`` (enqueue to start at 100 jobs/s, raw and
taskbridge; 1,000 jobs, 300 with ``--quick``), ``bench_ceiling.py --engine`` (the bodies that engine
writes pushed raw as fast as Python can), ``bench_backlog.py`` (drain rate and worker memory with ten times
the backlog, raw and taskbridge; 2,000 against 20,000 with ``--quick``; one round unless
``--backlog-rounds``, as each fills ten times the jobs) and, on Redis,
``bench_rate_limits.py`` (limits up to the drain capacity across 3 workers, 10,000 rate keys and
their expiry; 2,000 keys with ``--quick``). It prints one markdown table of ratios with the raw figures beside
them, writes ``benchmarks/results/<date>.json`` and ``<date>.md`` (the table) and draws
``benchmarks/results/<date>.png`` (matplotlib, from the ``bench`` extra). Ratios above 1 mean
taskbridge is faster.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
BROKERS = {"redis": "redis://127.0.0.1:6379/0", "amqp": "amqp://guest:guest@127.0.0.1:5672//"}
ENGINES = ("celery", "dramatiq")


def _reachable(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 0), timeout=2):
            return True
    except OSError:
        return False


def _run(script: str, broker: str, jobs: int, out: Path, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    command = [sys.executable, str(HERE / script), "--broker", broker, "--jobs", str(jobs), "--json", str(out), *extra]
    print("$", " ".join(command[1:]), flush=True)
    subprocess.run(command, check=True, cwd=HERE)
    figures: dict[str, Any] = json.loads(out.read_text())
    return figures


def _median(rounds: list[dict[str, Any]]) -> dict[str, float]:
    keys = [k for k, v in rounds[0].items() if isinstance(v, int | float) and k not in ("jobs", "rate")]
    return {key: statistics.median(r[key] for r in rounds) for key in keys}


def measure(
    jobs: int, rounds: int, workdir: Path, latency_jobs: int, quick: bool = False, backlog_rounds: int = 1
) -> dict[str, Any]:
    """Figures per combination (medians over ``rounds``), per broker's ceiling, the backlog and the
    rate-limit runs."""
    results: dict[str, Any] = {
        "jobs": jobs,
        "latency_jobs": latency_jobs,
        "rounds": rounds,
        "combinations": {},
        "ceilings": {},
        "backlog": {},
        "rate_limits": {},
    }
    size = ("--quick", "--rounds", str(backlog_rounds)) if quick else ("--rounds", str(backlog_rounds))
    for scheme, broker in BROKERS.items():
        if not _reachable(broker):
            print(f"skipping {scheme}: {broker} is not reachable", flush=True)
            continue
        for engine in ENGINES:
            # The ceiling with the bodies this engine writes, right before its own measurement.
            ceiling = [
                _run(
                    "bench_ceiling.py",
                    broker,
                    jobs,
                    workdir / f"ceiling-{engine}-{scheme}-{i}.json",
                    ("--engine", engine),
                )
                for i in range(rounds)
            ]
            results["ceilings"][f"{engine}-{scheme}"] = _median(ceiling)
            runs = [
                _run(f"bench_{engine}.py", broker, jobs, workdir / f"{engine}-{scheme}-{i}.json") for i in range(rounds)
            ]
            latency = [
                _run(
                    "bench_latency.py",
                    broker,
                    latency_jobs,
                    workdir / f"latency-{engine}-{scheme}-{i}.json",
                    ("--engine", engine, *(("--taskbridge-first",) if i % 2 else ())),
                )
                for i in range(rounds)
            ]
            results["combinations"][f"{engine}-{scheme}"] = {**_median(runs), **_median(latency)}
            backlog = _run(
                "bench_backlog.py",
                broker,
                0 if quick else jobs,  # 0: its --quick backlogs, 2,000 and 20,000
                workdir / f"backlog-{engine}-{scheme}.json",
                ("--engine", engine, *size),
            )
            results["backlog"][f"{engine}-{scheme}"] = {k: v for k, v in backlog.items() if k != "rounds"}
        if scheme == "redis":
            quick_flag = ("--quick",) if quick else ()
            results["rate_limits"]["dramatiq-redis"] = _run(
                "bench_rate_limits.py", broker, 0, workdir / "rate-limits.json", quick_flag
            )
    return results


def _ceiling(results: dict[str, Any], combination: str) -> float | None:
    """The ceiling measured with the combination's own bodies (results before those: the broker's)."""
    ceilings = results["ceilings"]
    figures = ceilings.get(combination) or ceilings.get(combination.split("-", 1)[1], {})
    value = figures.get("ceiling_publish")
    return float(value) if value else None


def ratios(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The headline ratios per combination."""
    table: dict[str, dict[str, float]] = {}
    for name, f in results["combinations"].items():
        ceiling = _ceiling(results, name)
        table[name] = {
            "enqueue": f["tb_enqueue"] / f["raw_enqueue"],
            # Against raw publishing with confirms too (RabbitMQ; taskbridge confirms by default).
            "enqueue_vs_confirmed": f["tb_enqueue"] / f["raw_enqueue_confirmed"]
            if "raw_enqueue_confirmed" in f
            else float("nan"),
            "enqueue_many_vs_loop": f["tb_many"] / f["raw_enqueue"],
            "enqueue_many_vs_ceiling": f["tb_many"] / ceiling if ceiling else float("nan"),
            "drain": f["tb_drain"] / f["raw_drain"],
            # Raw Celery on its own defaults acknowledges before running; Dramatiq's defaults are
            # at-least-once, so its raw side already runs on them.
            "drain_vs_raw_defaults": f["tb_drain"] / f.get("raw_default_drain", f["raw_drain"]),
            "latency_p50": f["raw_p50_ms"] / f["tb_p50_ms"] if "tb_p50_ms" in f else float("nan"),
        }
    return table


def markdown(results: dict[str, Any]) -> str:
    rows = [
        "| combination | enqueue ratio | enqueue ratio vs raw with confirms | `enqueue_many` vs raw loop "
        "| `enqueue_many` vs ceiling | drain ratio | drain ratio vs raw on its defaults "
        "| raw drain/s | taskbridge drain/s | `enqueue_many`/s | ceiling/s "
        "| `enqueue_many` CPU us/job (ceiling's) | latency p50 ms, taskbridge (raw) | latency p99 ms, taskbridge (raw) "
        "| worker CPU us/job, taskbridge (raw) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    nan = float("nan")
    for name, r in ratios(results).items():
        f = results["combinations"][name]
        ceiling = _ceiling(results, name) or float("nan")
        ceiling_cpu = (results["ceilings"].get(name) or {}).get("ceiling_cpu", nan)
        rows.append(
            f"| {name} | {r['enqueue']:.2f} | {_confirmed(r['enqueue_vs_confirmed'])} "
            f"| {r['enqueue_many_vs_loop']:.1f}x | {r['enqueue_many_vs_ceiling']:.2f} "
            f"| {r['drain']:.2f} | {r['drain_vs_raw_defaults']:.2f} "
            f"| {f['raw_drain']:,.0f} | {f['tb_drain']:,.0f} | {f['tb_many']:,.0f} "
            f"| {ceiling:,.0f} | {f.get('tb_many_cpu', nan) * 1e6:.1f} ({ceiling_cpu * 1e6:.1f}) "
            f"| {f.get('tb_p50_ms', nan):.1f} ({f.get('raw_p50_ms', nan):.1f}{_with_confirms(f)}) "
            f"| {f.get('tb_p99_ms', nan):.1f} ({f.get('raw_p99_ms', nan):.1f}) "
            f"| {f.get('tb_cpu', nan) * 1e6:.0f} ({f.get('raw_cpu', nan) * 1e6:.0f}) |"
        )
    rows += frames_rows(results) + backlog_rows(results) + rate_limit_rows(results)
    return "\n".join(rows)


def frames_rows(results: dict[str, Any]) -> list[str]:
    """RabbitMQ: what the broker takes with no client cost (frames marshalled beforehand), unconfirmed
    and stored before it answers (a transaction or publisher confirms per 1,000), against
    ``enqueue_many``, which confirms each batch with a transaction."""
    rows: list[str] = []
    for name, figures in results["ceilings"].items():
        if "ceiling_frames" not in figures or name not in results["combinations"]:
            continue
        if not rows:
            rows = [
                "",
                "| combination | pika `basic_publish`/s | frames unconfirmed/s | frames, a transaction "
                "per 1,000/s | frames, confirms per 1,000/s | `enqueue_many`/s | raw loop/s "
                "| `enqueue_many` / best confirmed frames |",
                "|---|---|---|---|---|---|---|---|",
            ]
        f = results["combinations"][name]
        confirmed = figures.get("ceiling_frames_confirmed", float("nan"))
        best = max(figures["ceiling_frames_tx"], confirmed if confirmed == confirmed else 0.0)
        rows.append(
            f"| {name} | {figures['ceiling_publish']:,.0f} | {figures['ceiling_frames']:,.0f} "
            f"| {figures['ceiling_frames_tx']:,.0f} | {confirmed:,.0f} | {f['tb_many']:,.0f} "
            f"| {f['raw_enqueue']:,.0f} | {f['tb_many'] / best:.2f} |"
        )
    return rows


def _with_confirms(figures: dict[str, Any]) -> str:
    """Raw Dramatiq's p50 publishing with confirms, as taskbridge does, where it was measured."""
    confirmed = figures.get("raw_confirmed_p50_ms")
    return f"; {confirmed:.1f} with confirms" if confirmed is not None else ""


def _confirmed(ratio: float) -> str:
    """The ratio against raw publishing with confirms; n/a where the transport has none (Redis)."""
    return "n/a" if ratio != ratio else f"{ratio:.2f}"


def backlog_rows(results: dict[str, Any]) -> list[str]:
    """Drain with ten times the backlog against the small one, and worker memory over that drain."""
    if not results.get("backlog"):
        return []
    rows = [
        "",
        "| combination | backlogs | drain 10x / 1x, taskbridge (raw) | taskbridge drain/s at 1x, 10x "
        "| raw drain/s at 1x, 10x | worker RSS growth MB over the 10x drain, taskbridge (raw) "
        "| worker CPU us/job at 1x, 10x, taskbridge (raw) | broker CPU us/job at 1x, 10x, taskbridge (raw) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, b in results["backlog"].items():
        rows.append(
            f"| {name} | {b['small']:,} / {b['big']:,} "
            f"| {b['taskbridge_big_vs_small']:.3f} ({b['raw_big_vs_small']:.3f}) "
            f"| {b['taskbridge_small_rate']:,.0f}, {b['taskbridge_big_rate']:,.0f} "
            f"| {b['raw_small_rate']:,.0f}, {b['raw_big_rate']:,.0f} "
            f"| {b['taskbridge_rss_growth_mb']:+.1f} ({b['raw_rss_growth_mb']:+.1f}) "
            f"| {_cpu_pair(b, 'taskbridge', 'worker')} ({_cpu_pair(b, 'raw', 'worker')}) "
            f"| {_cpu_pair(b, 'taskbridge', 'broker')} ({_cpu_pair(b, 'raw', 'broker')}) |"
        )
    return rows


def _cpu_pair(backlog: dict[str, Any], side: str, part: str) -> str:
    """CPU microseconds per job at the small and the big backlog ("-" in results from before they were taken)."""
    small, big = backlog.get(f"{side}_{part}_cpu_us_small"), backlog.get(f"{side}_{part}_cpu_us_big")
    return "-" if small is None or big is None else f"{small:.0f}, {big:.0f}"


def rate_limit_rows(results: dict[str, Any]) -> list[str]:
    """Achieved rate against the limit, the busiest window, and the rate keys' records."""
    rows: list[str] = []
    for name, r in results.get("rate_limits", {}).items():
        rows += [
            "",
            f"{name}, 3 worker processes, drain capacity {r['capacity']:,.0f} jobs/s (a limit of 1,000,000/s):",
            "",
            "| limit/s | achieved / limit | most starts in one period | gaps under half the interval |",
            "|---|---|---|---|",
        ]
        for run in r["runs"]:
            bound = " (workers bound)" if run["workers_bound"] else ""
            rows.append(
                f"| {run['limit']:,.0f} | {run['achieved_vs_limit']:.3f}{bound} "
                f"| {run['busiest_window']:,} of {run['allowed_per_window']:,.0f} "
                f"| {run['gaps_under_half_interval']:,} |"
            )
        k = r["keyed"]
        expired = k["rate_records_expired_after"]
        rows += [
            "",
            f"`rate_key=`: {k['keys']:,} keys x {k['per_key']} jobs at {k['key_limit']} per key: most starts of one "
            f"key in one period {k['busiest_key_window']} of {k['allowed_per_window']:g}, tightest gap "
            f"{k['tightest_gap']:.2f} s (interval {k['interval']:.2f} s); "
            f"rate records peak {k['rate_records_peak']:,}, "
            + (f"all expired {expired:.1f} s after the last run" if expired is not None else "not all expired"),
        ]
    return rows


def chart(results: dict[str, Any], path: Path) -> None:
    """Grouped bars of the ratios per combination, with the 1.0 line (raw)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = ratios(results)
    names = list(table)
    measures = [
        ("enqueue", "enqueue"),
        ("drain", "drain"),
        ("drain_vs_raw_defaults", "drain vs raw on its defaults"),
        ("enqueue_many_vs_ceiling", "enqueue_many / ceiling"),
        ("latency_p50", "raw p50 latency / taskbridge's"),
    ]
    width = 0.8 / len(measures)
    fig, ax = plt.subplots(figsize=(max(6, 1.8 * len(names)), 4))
    for index, (key, label) in enumerate(measures):
        xs = [i + (index - (len(measures) - 1) / 2) * width for i in range(len(names))]
        ax.bar(xs, [table[n][key] for n in names], width, label=label)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("taskbridge / raw (higher is better)")
    ax.set_title(f"taskbridge vs raw engines, {results['jobs']:,} jobs, median of {results['rounds']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3,000 jobs, one round")
    parser.add_argument("--jobs", type=int, default=None, help="jobs per measurement (default 20,000)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds; the table shows medians (default 3)")
    parser.add_argument("--latency-jobs", type=int, default=None, help="jobs per latency side (default 1,000)")
    parser.add_argument(
        "--backlog-rounds", type=int, default=1, help="rounds of the backlog runs (each fills 10x the jobs)"
    )
    parser.add_argument("--out", type=Path, default=HERE / "results", help="where the JSON and PNG go")
    args = parser.parse_args()
    jobs = args.jobs or (3_000 if args.quick else 20_000)
    rounds = args.rounds or (1 if args.quick else 3)
    os.environ.setdefault("TASKBRIDGE_SQS_ENDPOINT_URL", "http://127.0.0.1:4566")
    with tempfile.TemporaryDirectory(prefix="taskbridge-bench-") as workdir:
        latency_jobs = args.latency_jobs or (300 if args.quick else 1_000)
        results = measure(jobs, rounds, Path(workdir), latency_jobs, args.quick, args.backlog_rounds)
    if not results["combinations"]:
        print("no broker reachable: nothing measured", file=sys.stderr)
        return 1
    results["date"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    results["ratios"] = ratios(results)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = dt.date.today().isoformat() + ("-quick" if args.quick else "")
    (args.out / f"{stem}.json").write_text(json.dumps(results, indent=2))
    table = markdown(results)
    print(table)
    (args.out / f"{stem}.md").write_text(table + "\n")
    try:
        chart(results, args.out / f"{stem}.png")
        print(f"wrote {args.out / f'{stem}.json'} and {args.out / f'{stem}.png'}")
    except ImportError:
        print(f"wrote {args.out / f'{stem}.json'}; no chart: pip install matplotlib (the 'bench' extra)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
