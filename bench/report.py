"""Numbers and tables of ``bench.fanout``: step statistics, the summary and its Markdown."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import time
from typing import Any

from bench.client import BUCKETS_PER_SECOND, HIST_SIZE


def percentile_ms(hist: dict[int, int], total: int, q: float) -> float | None:
    """The ``q`` quantile of a bucket histogram, as the upper edge of its bucket in ms."""
    if total <= 0:
        return None
    target = max(1, int(q * total + 0.999999))
    seen = 0
    for bucket in sorted(hist):
        seen += hist[bucket]
        if seen >= target:
            return (bucket + 1) * 1000 / BUCKETS_PER_SECOND
    return HIST_SIZE * 1000 / BUCKETS_PER_SECOND


def step_stats(
    rate: float,
    published: dict[str, Any],
    reports: list[dict[str, Any]],
    subscribed: int,
    cpu: dict[str, float],
    cpu_seconds: float,
    max_p99_ms: float,
) -> dict[str, Any]:
    """Merge what the publisher sent and the load clients received into one step's row.

    ``cpu`` is each process's CPU in % of one core over the ``cpu_seconds`` the step took
    (publishing and draining).
    """
    hist: dict[int, int] = {}
    for report in reports:
        for bucket, count in report["hist"].items():
            hist[int(bucket)] = hist.get(int(bucket), 0) + count
    unique = sum(r["unique"] for r in reports)
    dups = sum(r["dups"] for r in reports)
    last_rx = max((r["last_rx"] for r in reports), default=0.0)
    count = published["count"]
    expected = count * subscribed
    window = last_rx - published["t0"] if unique else 0.0
    loss = (expected - unique) / expected * 100 if expected else 0.0
    p99 = percentile_ms(hist, unique, 0.99)
    return {
        "target_rate": rate,
        "published": count,
        "publish_rate": round(count / published["seconds"], 1) if published["seconds"] else 0.0,
        "publish_errors": published["errors"],
        "first_publish_error": published["first_error"],
        "publish_call_p50_ms": published["call_p50_ms"],
        "publish_call_p99_ms": published["call_p99_ms"],
        "expected": expected,
        "delivered": unique,
        "deliveries_per_s": round(unique / window, 1) if window > 0 else 0.0,
        "loss_pct": round(loss, 3),
        "duplicates": dups,
        "p50_ms": percentile_ms(hist, unique, 0.50),
        "p99_ms": p99,
        "max_ms": round(max((r["max_lat"] for r in reports), default=0.0) * 1000, 1),
        "disconnected": max((r["disconnected"] for r in reports), default=0),
        "per_server": [sum(col) for col in zip(*(r["per_server"] for r in reports), strict=True)],
        "cpu_pct": cpu,
        "server_us_per_delivery": _per_delivery(cpu, "server", cpu_seconds, unique),
        "client_us_per_delivery": _per_delivery(cpu, "client", cpu_seconds, unique),
        "sustained": bool(expected and unique == expected and p99 is not None and p99 < max_p99_ms),
    }


def _per_delivery(cpu: dict[str, float], prefix: str, seconds: float, n: int) -> float | None:
    """CPU microseconds the processes named ``prefix*`` spent per delivery."""
    if not n:
        return None
    used = sum(v for k, v in cpu.items() if k.startswith(prefix)) / 100 * seconds
    return round(used / n * 1e6, 1)


def summarize(steps: list[dict[str, Any]]) -> dict[str, Any]:
    """Sustained deliveries/s (best step with no loss and p99 under the bound) and raw max."""
    ok = [s for s in steps if s["sustained"]]
    best = max(ok, key=lambda s: s["deliveries_per_s"], default=None)
    raw = max(steps, key=lambda s: s["deliveries_per_s"], default=None)
    return {
        "sustained_deliveries_per_s": best["deliveries_per_s"] if best else 0.0,
        "sustained_at_rate": best["target_rate"] if best else None,
        "sustained_p50_ms": best["p50_ms"] if best else None,
        "sustained_p99_ms": best["p99_ms"] if best else None,
        "sustained_server_us": best["server_us_per_delivery"] if best else None,
        "sustained_client_us": best["client_us_per_delivery"] if best else None,
        "saturated": not (best is not None and best is steps[-1]),
        "raw_max_deliveries_per_s": raw["deliveries_per_s"] if raw else 0.0,
        "raw_max_at_rate": raw["target_rate"] if raw else None,
    }


def compare(result: dict[str, Any], target: float) -> None:
    """Add the realtime/naive ratios and the verdict on the issue's target to ``result``.

    The target is "at least ``target`` times the naive approach's sustained deliveries/s at
    an equal or lower p99", so besides the plain ratio of sustained figures this finds the
    app's best step with no loss and a p99 no higher than the naive approach's sustained p99,
    and the app's latency at the naive approach's sustained rate (equal load).
    """
    approaches = result["approaches"]
    rt, nv = approaches.get("realtime", {}), approaches.get("naive", {})
    rts, nvs = rt.get("summary"), nv.get("summary")
    if not (rts and nvs and nvs["sustained_deliveries_per_s"]):
        return
    base = nvs["sustained_deliveries_per_s"]
    result["ratio"] = round(rts["sustained_deliveries_per_s"] / base, 2)
    bound = nvs["sustained_p99_ms"]
    matched = [
        s
        for s in rt["steps"]
        if s["sustained"] and s["p99_ms"] is not None and s["p99_ms"] <= bound
    ]
    best = max(matched, key=lambda s: s["deliveries_per_s"], default=None)
    matched_ratio = best["deliveries_per_s"] / base if best else 0.0
    result["ratio_at_equal_p99"] = round(matched_ratio, 2)
    same = [s for s in rt["steps"] if s["target_rate"] == nvs["sustained_at_rate"]]
    if same:
        result["realtime_at_naive_rate"] = {k: same[0][k] for k in ("p50_ms", "p99_ms")}
    met = matched_ratio >= target
    lines = [
        f"**Target** (at least {target:g}x the naive sustained deliveries/s at an equal or lower "
        f"p99): **{'met' if met else 'not met'}**. Sustained ratio {result['ratio']:.2f}x; "
        f"with realtime held to the naive p99 ({_ms(bound)}): "
        + (
            f"{_num(best['deliveries_per_s'])}/s at {best['target_rate']:g} events/s, "
            f"{matched_ratio:.2f}x."
            if best
            else "no step qualifies."
        )
    ]
    if same:
        lines.append(
            f"At equal load ({nvs['sustained_at_rate']:g} events/s), p50/p99 is "
            f"{_ms(same[0]['p50_ms'])} / {_ms(same[0]['p99_ms'])} for realtime and "
            f"{_ms(nvs['sustained_p50_ms'])} / {_ms(nvs['sustained_p99_ms'])} for naive."
        )
    if not rts["saturated"]:
        lines.append("Realtime did not saturate: its figures are lower bounds (add --rates).")
    result["verdict"] = " ".join(lines)


def progress_line(name: str, index: int, total: int, s: dict[str, Any]) -> str:
    cpu = s["cpu_pct"]
    roles = " ".join(f"{r} {v:.0f}" for r, v in cpu.items() if r != "machine")
    return (
        f"[{name}] step {index}/{total}: target {s['target_rate']:g} ev/s, published "
        f"{s['publish_rate']:g} ev/s, delivered {s['deliveries_per_s']:,.0f}/s "
        f"({s['delivered']:,}/{s['expected']:,}, loss {s['loss_pct']:.2f}%, dups "
        f"{s['duplicates']}), p50 {_ms(s['p50_ms'])} p99 {_ms(s['p99_ms'])} max "
        f"{_ms(s['max_ms'])} | CPU% {roles} machine {cpu.get('machine', 0):.0f}/"
        f"{100 * (os.cpu_count() or 1)}"
        + (f" | {s['disconnected']} connections lost so far" if s["disconnected"] else "")
    )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f} ms"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def cpu_reference() -> float:
    """CPU seconds of a fixed pure-Python loop: lower is a faster machine. The VM's speed moves
    by tens of per cent between runs and the load columns do not see it (docs/performance.md,
    "Machine"), so each tool records this beside its figures."""
    start, x = time.process_time(), 0
    for i in range(3_000_000):
        x += i * i % 7
    return round(time.process_time() - start, 3)


def machine_info(redis_version: str) -> dict[str, Any]:
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    versions = {}
    for dist in ("django", "channels", "channels-redis", "daphne", "twisted", "picows"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "-"
    return {
        "cpus": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "redis": redis_version,
        "versions": versions,
        "cpu_reference_s": cpu_reference(),
    }


def git_revision() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5
        )
    except OSError:
        return "-"
    return out.stdout.strip() or "-"


def markdown(result: dict[str, Any]) -> str:
    cfg, machine, approaches = result["config"], result["machine"], result["approaches"]
    lines = [
        "## Benchmark results",
        "",
        f"{cfg['clients']} subscribers on `{cfg['stream']}`, split over {cfg['servers']} daphne "
        f"processes (the app's run by `{cfg.get('serve', 'daphne')}`); "
        f"rates {', '.join(f'{r:g}' for r in cfg['rates'])} events/s, "
        f"{cfg['duration']:g} s each, drain ≤ {cfg['drain']:g} s. Sustained = best "
        f"deliveries/s of a step with no loss and p99 < {cfg['max_p99_ms']:g} ms.",
        "",
        f"Machine: {machine['cpus']} CPUs ({machine['cpu_model']}), {machine['memory_gib']} GiB, "
        f"Linux {machine['kernel']}, Python {machine['python']}, Redis {machine['redis']}, "
        + ", ".join(f"{k} {v}" for k, v in machine["versions"].items())
        + f"; revision {result['revision']}"
        + f"; CPU reference {machine.get('cpu_reference_s', '-')} s.",
        "",
        "| | " + " | ".join(approaches) + " | ratio |",
        "|---|" + "---:|" * (len(approaches) + 1),
    ]
    summaries = {name: a.get("summary") for name, a in approaches.items()}
    # (label, key, format, ratio): "more" shows realtime/naive, "less" naive/realtime.
    rows = [
        ("sustained deliveries/s", "sustained_deliveries_per_s", _num, "more"),
        ("  at target events/s", "sustained_at_rate", _num, ""),
        ("  p50 latency", "sustained_p50_ms", _ms, ""),
        ("  p99 latency", "sustained_p99_ms", _ms, ""),
        ("  server CPU µs per delivery", "sustained_server_us", _num, "less"),
        ("  client CPU µs per delivery", "sustained_client_us", _num, ""),
        ("raw max deliveries/s", "raw_max_deliveries_per_s", _num, "more"),
    ]
    for label, key, fmt, ratio_kind in rows:
        cells = []
        for name in approaches:
            summary = summaries[name]
            if summary is None:
                cells.append("failed")
                continue
            cell = fmt(summary[key])
            if key == "sustained_deliveries_per_s" and not summary["saturated"]:
                cell = "≥ " + cell
            cells.append(cell)
        lines.append(
            f"| {label} | " + " | ".join(cells) + f" | {_ratio(summaries, key, ratio_kind)} |"
        )
    if result.get("verdict"):
        lines += ["", result["verdict"]]
    for name, approach in approaches.items():
        lines += ["", f"### {name}", ""]
        if approach.get("error"):
            lines.append(f"Failed: {approach['error']}")
            continue
        lines += [
            "| target ev/s | published ev/s | deliveries/s | expected | loss % | dups "
            "| p50 ms | p99 ms | max ms | server µs/delivery "
            "| CPU % client / servers / redis / publisher |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for s in approach["steps"]:
            cpus = _cpu_cell(s["cpu_pct"])
            rate = f"{s['target_rate']:g}" + (" †" if s.get("disturbed") else "")
            lines.append(
                f"| {rate} | {s['publish_rate']:g} | {s['deliveries_per_s']:,.0f} "
                f"| {s['expected']:,} | {s['loss_pct']:.2f} | {s['duplicates']} "
                f"| {_num1(s['p50_ms'])} | {_num1(s['p99_ms'])} | {_num1(s['max_ms'])} "
                f"| {_num(s['server_us_per_delivery'])} | {cpus} |"
            )
    for name, approach in approaches.items():
        lost = max((s["disconnected"] for s in approach.get("steps", ())), default=0)
        if lost:
            lines += ["", f"{name}: the servers closed {lost} connections during the run."]
    if any(s.get("disturbed") for a in approaches.values() for s in a.get("steps", ())):
        lines += [
            "",
            f"† Other load on the machine took over {cfg['max_other']:g}% of a core during the "
            "step, even after repeats: its figures understate what the approach can do.",
        ]
    return "\n".join(lines) + "\n"


def _ratio(summaries: dict[str, Any], key: str, kind: str) -> str:
    rt, nv = summaries.get("realtime"), summaries.get("naive")
    if not (kind and rt and nv and rt[key] and nv[key]):
        return ""
    if kind == "more":
        return f"{rt[key] / nv[key]:.2f}x"
    return f"{nv[key] / rt[key]:.2f}x less"


def _cpu_cell(cpu: dict[str, float]) -> str:
    """``client / server+server / redis / publisher (machine)``, in % of one core."""

    def part(prefix: str) -> str:
        return "+".join(f"{v:.0f}" for k, v in cpu.items() if k.startswith(prefix)) or "-"

    return (
        f"{part('client')} / {part('server')} / {part('redis')} / {part('publisher')} "
        f"(other {cpu.get('other', 0):.0f}, machine {cpu.get('machine', 0):.0f})"
    )


def _num1(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"
