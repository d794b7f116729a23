"""The bench's outputs: flags, the summary and target checks, Markdown, JSON and a PNG plot.

Everything here works from the results document ``run.py`` builds (the JSON file), so a stored
run can be rendered again: ``python -m bench.report bench/results/latest.json``. A document
holds one sweep per worker count (``sweeps``); one written before ``--workers`` existed (the
steps at the top level) is read as a single sweep with ``WORKERS=1`` (:func:`normalise`).
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

#: A process at or above this CPU % (of one core) is treated as the bottleneck.
BOUND_PCT = 90.0
#: CPU % used by processes outside the bench above which a row is flagged.
OTHER_PCT = 20.0
#: Other load (CPU %) from which a direct step no longer counts as a baseline.
BASELINE_OTHER_PCT = 50.0
#: CPU % taken by the hypervisor (steal) above which a row is flagged.
STEAL_PCT = 10.0
ADDED_P99_LIMIT_MS = 20.0
#: Capacity: the largest N whose proxy round-trip p99 is at most this.
P99_LIMIT_MS = 20.0
#: Delivered share a step needs to count as holding its sessions.
HOLDS_DELIVERED = 0.98
#: What 2 workers should hold, as a multiple of what 1 worker holds.
SCALING_GOAL = 1.4
#: Paced churn kept up when its rate (first start -> last finish) is within 5 % of the offer;
#: the last opens' own duration stretches the span a little even when all is well.
PACED_KEPT_UP = 0.95
NO_BOTTLENECK = "no process reached 90 % of a core and the machine was never full"
#: All cores at least this busy (% per core) over a window: the machine was the bottleneck.
MACHINE_FULL = 95.0


# -- per-step flags and progress lines ----------------------------------------------------------


def flags(step: dict[str, Any], cpus: int) -> list[str]:
    """What to keep in mind when reading a sweep step (``cpus``: the machine's CPU count)."""
    cpu = step["cpu_pct"]
    found = []
    if step.get("saturated"):
        found.append("saturated")
    if cpu.get("machine", 0) >= MACHINE_FULL * cpus:
        found.append("machine-full")
    if step["target"] == "proxy" and cpu.get("proxy", 0) >= BOUND_PCT:
        found.append("proxy-bound")
    if cpu.get("emulator", 0) >= BOUND_PCT:
        found.append("emulator-bound")
    if cpu.get("loadgen", 0) >= BOUND_PCT:
        found.append("generator-bound")
    if cpu.get("other", 0) >= OTHER_PCT:
        found.append(f"other-load {cpu['other']:.0f}%")
    if cpu.get("steal", 0) >= STEAL_PCT:
        found.append(f"steal {cpu['steal']:.0f}%")
    if step["open_errors"] or step["stream_errors"] or step["misrouted"] or step["bad_size"]:
        found.append("errors")
    if step.get("settled_before_s", 0) is None:
        found.append("started-busy")
    return found


def _signed(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:+.{digits}f}"


def _f(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _pcts(summary: dict[str, Any], keys: Sequence[str] = ("p50", "p95", "p99")) -> str:
    return " / ".join(_f(summary.get(k), 1 if (summary.get(k) or 0) >= 100 else 2) for k in keys)


def per_worker_text(step: dict[str, Any]) -> str:
    """``"104/96"``: the sessions of each worker, by worker id ("-" when not counted)."""
    counts = step.get("sessions_per_worker")
    if not counts:
        return "-"
    return "/".join(str(c["sessions"]) for c in counts)


def deflate_text(deflate: dict[str, Any] | None) -> str:
    """How the step's upgrades went with permessage-deflate, in a few words."""
    if not deflate:
        return "not recorded"
    if not deflate["offered"]:
        return "not offered"
    if not deflate["negotiated"]:
        return f"declined ({deflate['upgrades']} upgrades)"
    if deflate["declined"]:
        return f"negotiated on {deflate['negotiated']} of {deflate['upgrades']} upgrades"
    return f"negotiated ({deflate['upgrades']} upgrades)"


def progress_line(step: dict[str, Any]) -> str:
    cpu = step["cpu_pct"]
    where = step["target"]
    if step.get("workers"):
        where += f" w={step['workers']}"
    per_worker = ""
    if step.get("sessions_per_worker"):
        per_worker = f"  sessions per worker: {per_worker_text(step)}"
    return (
        f"{where:>10} N={step['sessions']:<4} delivered {step['delivered_per_s']:>7.1f}"
        f"/{step['offered_per_s']:.0f} fr/s  rtt p50/p95/p99 {_pcts(step['rtt_ms'])} ms  "
        f"cpu proxy {cpu.get('proxy', 0):.0f}% emulator {cpu.get('emulator', 0):.0f}% "
        f"generator {cpu.get('loadgen', 0):.0f}% other {cpu.get('other', 0):.0f}%"
        f"{per_worker}  deflate {deflate_text(step.get('deflate'))}"
        + (f"  [{', '.join(step['flags'])}]" if step["flags"] else "")
    )


def churn_line(churn: dict[str, Any]) -> str:
    where = churn["target"] + (f" w={churn['workers']}" if churn.get("workers") else "")
    parts = [f"{where:>10} churn with {churn['opened_streams']} streaming:"]
    for key in ("burst", "paced"):
        if key in churn:
            phase = churn[key]
            parts.append(
                f"{key} {phase['opens_per_s']} opens/s, open p50/p95/p99 "
                f"{_pcts(phase['open_ms'])} ms, {phase['open_failures']} failed;"
            )
    return " ".join(parts)


# -- summary and checks -----------------------------------------------------------------------


def _added(entry: dict[str, Any], key: str) -> float | None:
    direct = entry.get("direct")
    if direct is None:
        return None
    via, base = entry["proxy"]["rtt_ms"].get(key), direct["rtt_ms"].get(key)
    return None if via is None or base is None else round(via - base, 3)


def baseline_disturbed(direct: dict[str, Any]) -> str:
    """Why a direct step cannot serve as the baseline ("" when it can): it saturated, the
    emulator, the generator or the machine was the bottleneck, other load took half a core or
    more, the hypervisor took CPU, errors, a busy start: any flag but mild other load."""
    mild = direct["cpu_pct"].get("other", 0) < BASELINE_OTHER_PCT
    flagged = [f for f in direct["flags"] if not (mild and f.startswith("other-load"))]
    return ", ".join(flagged)


def summary(document: dict[str, Any]) -> dict[str, Any]:
    """The largest N whose added p99 stays under 20 ms, and who saturated first."""
    largest: int | None = None
    note = ""
    for entry in document["steps"]:
        proxy, direct = entry["proxy"], entry.get("direct")
        if direct is None:
            note = "no direct baseline (--no-direct)"
            break
        disturbed = baseline_disturbed(direct)
        if disturbed:
            note = f"the direct baseline is not reliable at N={entry['sessions']}: {disturbed}"
            break
        added = _added(entry, "p99")
        if proxy["saturated"] or added is None or added >= ADDED_P99_LIMIT_MS:
            break
        largest = entry["sessions"]
    bottleneck = None
    for entry in document["steps"]:
        bound = [f for f in entry["proxy"]["flags"] if f.endswith("-bound") or f == "machine-full"]
        if bound:
            bottleneck = f"{', '.join(bound)} first at N={entry['sessions']} (via proxy)"
            break
    capacity, found = largest_holding(document["steps"])
    return {
        "largest_n_added_p99_under_20ms": largest,
        "largest_n_note": note,
        "largest_n_p99_under_20ms": capacity,
        "p99_limit_found": found,
        "p99_not_held": not_holding(document["steps"]),
        "first_bottleneck": bottleneck,
        "stop_reason": document.get("stop_reason"),
    }


def largest_holding(steps: Sequence[dict[str, Any]]) -> tuple[int | None, bool]:
    """The largest N whose proxy step holds: not saturated, >= 98 % delivered and round-trip
    p99 <= 20 ms. Second: whether a larger N was measured and did not hold (if not, the sweep
    ended first and the N is only a lower bound).

    Not "counting up": a step below it that did not hold does not lower it. Disturbances (other
    load on the machine, a slow phase of the VM) only ever make a step worse, so a step that
    held at a large N shows the capacity; the steps that did not hold are listed by
    :func:`not_holding`."""
    held = [e["sessions"] for e in steps if _holds(e["proxy"])]
    largest = max(held) if held else None
    beyond = [e for e in steps if largest is None or e["sessions"] > largest]
    return largest, bool(beyond)


def not_holding(steps: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The proxy steps that did not hold p99 <= 20 ms: their N, p99 and flags."""
    return [
        {
            "sessions": e["sessions"],
            "rtt_p99_ms": e["proxy"]["rtt_ms"]["p99"],
            "flags": e["proxy"]["flags"],
        }
        for e in steps
        if not _holds(e["proxy"])
    ]


def _check(name: str, passed: bool | None, measured: str) -> dict[str, Any]:
    status = "N/A" if passed is None else ("PASS" if passed else "FAIL")
    return {"target": name, "measured": measured, "status": status}


def _step(document: dict[str, Any], sessions: int) -> dict[str, Any] | None:
    return next((e for e in document["steps"] if e["sessions"] == sessions), None)


def _missing(document: dict[str, Any], sessions: int) -> tuple[bool | None, str]:
    """Why step ``sessions`` has no numbers: not asked for (N/A), or the sweep stopped (FAIL)."""
    if sessions in document["meta"]["options"]["sessions"] and document.get("stop_reason"):
        return False, f"N={sessions} not reached: {document['stop_reason']}"
    return None, f"N={sessions} not measured"


def checks(document: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of issue #6, PASS / FAIL / N/A with the number behind it."""
    options = document["meta"]["options"]
    swept = options["sessions"]
    results = []

    entry = _step(document, 100)
    name = "adds <= 1 ms p50 and <= 3 ms p99 at 100 sessions"
    if entry is None:
        results.append(_check(name, *_missing(document, 100)))
    elif entry.get("direct") is None:
        results.append(_check(name, None, "no direct baseline"))
    else:
        p50, p99 = _added(entry, "p50"), _added(entry, "p99")
        measured = f"{_signed(p50)} ms p50, {_signed(p99)} ms p99"
        disturbed = baseline_disturbed(entry["direct"])
        if disturbed:
            why = f"{measured}; direct baseline unreliable: {disturbed}"
            results.append(_check(name, None, why))
        else:
            within = p50 is not None and p99 is not None and p50 <= 1 and p99 <= 3
            results.append(_check(name, within and not entry["proxy"]["saturated"], measured))

    name = "holds >= 300 sessions with p99 <= 20 ms"
    big = [e for e in document["steps"] if e["sessions"] >= 300]
    if not big:
        if max(swept) < 300:
            results.append(_check(name, None, "no N >= 300 in the sweep"))
        else:
            results.append(_check(name, False, f"not reached: {document.get('stop_reason')}"))
    else:
        best = big[0]
        for e in big:
            if _holds(e["proxy"]):
                best = e
        proxy = best["proxy"]
        measured = (
            f"N={best['sessions']}: p99 {_f(proxy['rtt_ms']['p99'])} ms, "
            f"{100 * (proxy['delivered_ratio'] or 0):.1f} % delivered"
        )
        results.append(_check(name, _holds(proxy), measured))

    name = "<= 0.35 ms proxy CPU per round-tripped frame at 200 sessions"
    entry = _step(document, 200)
    if entry is None:
        results.append(_check(name, *_missing(document, 200)))
    else:
        per_frame = entry["proxy"]["proxy_cpu_ms_per_frame"]
        ok = per_frame is not None and per_frame <= 0.35
        results.append(_check(name, ok, f"{_f(per_frame, 3)} ms"))

    name = "<= 150 KiB RSS per live session"
    held = [e for e in document["steps"] if e["sessions"] >= 100 and not e["proxy"]["saturated"]]
    if held:
        kib = held[-1]["proxy"]["rss_per_session_kib"]
        results.append(_check(name, kib <= 150, f"{_f(kib)} KiB at N={held[-1]['sessions']}"))
    elif document["steps"]:
        last = document["steps"][-1]
        kib = last["proxy"]["rss_per_session_kib"]
        results.append(
            _check(name, None, f"no unsaturated N >= 100; {_f(kib)} KiB at N={last['sessions']}")
        )
    else:
        results.append(_check(name, None, "no step measured"))

    name = ">= 200 opens/s with p99 open <= 50 ms while 100 sessions stream"
    churn = document.get("churn", {}).get("proxy")
    if not churn:
        results.append(_check(name, None, "churn not measured (--no-churn)"))
    else:
        paced, burst = churn["paced"], churn["burst"]
        p99 = paced["open_ms"]["p99"]
        ok = (
            paced["offered_per_s"] >= 200
            and paced["opened"] == paced["scheduled"]
            and paced["opens_per_s"] >= PACED_KEPT_UP * paced["offered_per_s"]
            and p99 is not None
            and p99 <= 50
            and churn["opened_streams"] >= 100
        )
        measured = (
            f"paced at {paced['offered_per_s']:.0f}/s: {paced['opens_per_s']} opens/s, "
            f"p99 {_f(p99)} ms, {paced['scheduled'] - paced['opened']} of "
            f"{paced['scheduled']} failed; burst peak {burst['opens_per_s']} opens/s "
            f"(p99 {_f(burst['open_ms']['p99'])} ms)"
        )
        results.append(_check(name, ok, measured))
    return results


def _holds(proxy: dict[str, Any]) -> bool:
    p99 = proxy["rtt_ms"]["p99"]
    return (
        not proxy["saturated"]
        and (proxy["delivered_ratio"] or 0) >= HOLDS_DELIVERED
        and p99 is not None
        and p99 <= P99_LIMIT_MS
    )


# -- several worker counts ----------------------------------------------------------------------


def normalise(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` with its sweeps under ``sweeps``: one written before ``--workers`` (its
    steps, churn and stop reason at the top level) becomes one sweep with ``WORKERS=1``."""
    if "sweeps" in document:
        return document
    moved = ("steps", "stop_reason", "churn", "idle_rss_bytes", "summary", "checks")
    result = {k: v for k, v in document.items() if k not in moved}
    result["sweeps"] = [
        {
            "workers": 1,
            "wall_seconds": document.get("wall_seconds"),
            "idle_rss_bytes": document.get("idle_rss_bytes", 0),
            "steps": document.get("steps", []),
            "stop_reason": document.get("stop_reason"),
            "churn": document.get("churn") or {},
        }
    ]
    return result


def sweep_view(document: dict[str, Any], sweep: dict[str, Any]) -> dict[str, Any]:
    """One sweep as a single-sweep document (what :func:`summary` and :func:`checks` read)."""
    return {"meta": document["meta"], **sweep}


def _at(sweep: dict[str, Any], sessions: int | None) -> dict[str, Any] | None:
    return next((e["proxy"] for e in sweep["steps"] if e["sessions"] == sessions), None)


def workers_summary(document: dict[str, Any]) -> dict[str, Any]:
    """Per worker count: the largest N with p99 <= 20 ms and the proxy's cost there; and how
    many times what 1 worker holds 2 workers hold (goal: :data:`SCALING_GOAL`)."""
    rows = []
    for sweep in document["sweeps"]:
        largest, found = largest_holding(sweep["steps"])
        there = _at(sweep, largest)
        rows.append(
            {
                "workers": sweep["workers"],
                "largest_n_p99_under_20ms": largest,
                "p99_limit_found": found,
                "proxy_cpu_pct": there["cpu_pct"]["proxy"] if there else None,
                "proxy_cpu_ms_per_frame": there["proxy_cpu_ms_per_frame"] if there else None,
                "rtt_p99_ms": there["rtt_ms"]["p99"] if there else None,
                "sessions_per_worker": there.get("sessions_per_worker") if there else None,
                "not_held": not_holding(sweep["steps"]),
                "first_bottleneck": sweep["summary"]["first_bottleneck"],
                "stop_reason": sweep["stop_reason"],
            }
        )
    by_workers = {row["workers"]: row for row in rows}
    one, two = by_workers.get(1), by_workers.get(2)
    ratio = None
    lower_bound = False
    note = ""
    if one is None or two is None:
        note = "needs sweeps with 1 and 2 workers (--workers 1,2)"
    elif not one["largest_n_p99_under_20ms"] or two["largest_n_p99_under_20ms"] is None:
        note = "no N held p99 <= 20 ms with 1 worker" if two else ""
    elif not one["p99_limit_found"]:
        note = (
            f"1 worker held the sweep's largest N ({one['largest_n_p99_under_20ms']}): "
            "no ratio without a larger N in --sessions"
        )
    else:
        ratio = round(two["largest_n_p99_under_20ms"] / one["largest_n_p99_under_20ms"], 2)
        lower_bound = not two["p99_limit_found"]
        if lower_bound:
            note = "2 workers held the sweep's largest N: the ratio is a lower bound"
    return {
        "by_workers": rows,
        "ratio_2_to_1": ratio,
        "ratio_is_lower_bound": lower_bound,
        "ratio_goal": SCALING_GOAL,
        "ratio_meets_goal": None if ratio is None else ratio >= SCALING_GOAL,
        "ratio_note": note,
    }


def deflate_summary(document: dict[str, Any]) -> dict[str, Any]:
    """Was permessage-deflate offered, and how many upgrades (steps and churn) accepted it,
    via the proxy and directly."""
    options = document["meta"]["options"]
    totals = {"proxy": [0, 0], "direct": [0, 0]}
    for sweep in document["sweeps"]:
        runs = [e["proxy"] for e in sweep["steps"]]
        runs += [
            e["direct"] for e in sweep["steps"] if "direct" in e and not e.get("direct_reused")
        ]
        runs += list((sweep.get("churn") or {}).values())
        for run in runs:
            deflate = run.get("deflate")
            if not deflate:
                continue
            total = totals[run["target"]]
            total[0] += deflate["upgrades"]
            total[1] += deflate["negotiated"]
    offered = not options.get("no_deflate_offer", True)
    return {
        "offered": offered,
        "offer": "permessage-deflate; client_max_window_bits" if offered else None,
        "proxy_ws_compression": bool(options.get("ws_compression", False)),
        "proxy_upgrades": totals["proxy"][0],
        "proxy_negotiated": totals["proxy"][1],
        "direct_upgrades": totals["direct"][0],
        "direct_negotiated": totals["direct"][1],
    }


def finish(document: dict[str, Any]) -> None:
    """Compute, in place, each sweep's summary and target checks, the comparison of the worker
    counts (``summary``) and the permessage-deflate outcome (``deflate``)."""
    for sweep in document["sweeps"]:
        view = sweep_view(document, sweep)
        sweep["summary"] = summary(view)
        sweep["checks"] = checks(view)
    document["summary"] = workers_summary(document)
    document["deflate"] = deflate_summary(document)


# -- Markdown -----------------------------------------------------------------------------------


def markdown(document: dict[str, Any]) -> str:
    """The report as Markdown: the worker counts compared, then per worker count its sweep
    table, churn table, summary and target checks."""
    meta, options = document["meta"], document["meta"]["options"]
    dirty = " + local changes" if meta.get("git_dirty") else ""
    workers = ", ".join(str(s["workers"]) for s in document["sweeps"])
    lines = [
        f"# liveproxy bench — {meta['started']}",
        "",
        f"Commit `{meta['git_commit']}`{dirty}, Python {meta['python']}, {meta['cpus']} CPUs "
        f"(shared by the proxy, the emulator and the generator). Each session sends "
        f"{options['frame_bytes']} B every {options['interval_ms']:g} ms; warm-up "
        f"{options['warmup']:g} s, window {options['duration']:g} s per step; generator client "
        f"`{options['client']}`. Worker counts (`WORKERS`): {workers}. Run took "
        f"{document['wall_seconds']:.0f} s.",
        "",
        _deflate_line(document["deflate"]),
    ]
    lines += _workers_markdown(document)
    for sweep in document["sweeps"]:
        lines += _sweep_markdown(document, sweep)
    lines += [
        "",
        "rtt: from handing a frame to the WebSocket to receiving its echo. CPU: psutil over the "
        "window, one core = 100 %; the proxy's is the supervisor's plus all its workers'; "
        "`other` = the machine's busy time not used by the bench (someone else's load). "
        "Sessions per worker: each worker's connections from the generator at the end of the "
        "window. See bench/README.md.",
        "",
    ]
    return "\n".join(lines)


def _deflate_line(deflate: dict[str, Any]) -> str:
    compression = "true" if deflate["proxy_ws_compression"] else "false"
    if not deflate["offered"]:
        return f"permessage-deflate: not offered (proxy `WS_COMPRESSION={compression}`)."
    direct = (
        f", {deflate['direct_negotiated']} of {deflate['direct_upgrades']} directly"
        if deflate["direct_upgrades"]
        else ""
    )
    return (
        f"permessage-deflate: every upgrade offered `{deflate['offer']}` (as Chrome does); "
        f"proxy `WS_COMPRESSION={compression}`: negotiated on {deflate['proxy_negotiated']} of "
        f"{deflate['proxy_upgrades']} upgrades via the proxy{direct}."
    )


def _workers_markdown(document: dict[str, Any]) -> list[str]:
    summ = document["summary"]
    lines = [
        "",
        "## Worker counts",
        "",
        "| workers | largest N with p99 <= 20 ms | proxy rtt p99 ms there | proxy CPU % there "
        "| proxy CPU ms/frame there | sessions per worker there | N that did not hold "
        "| first bottleneck | sweep stopped |",
        "|---:|---:|---:|---:|---:|---|---|---|---|",
    ]
    for row in summ["by_workers"]:
        largest = row["largest_n_p99_under_20ms"]
        shown = "none" if largest is None else str(largest)
        if largest is not None and not row["p99_limit_found"]:
            shown = f">= {largest} (the sweep's largest N)"
        counts = row.get("sessions_per_worker")
        lines.append(
            f"| {row['workers']} | **{shown}** | {_f(row['rtt_p99_ms'], 2)} "
            f"| {_f(row['proxy_cpu_pct'], 0)} | {_f(row['proxy_cpu_ms_per_frame'], 3)} "
            f"| {per_worker_text({'sessions_per_worker': counts})} "
            f"| {_not_held_text(row.get('not_held') or [])} "
            f"| {row['first_bottleneck'] or NO_BOTTLENECK} | {row['stop_reason'] or 'no'} |"
        )
    ratio = summ["ratio_2_to_1"]
    if ratio is not None:
        bound = ">= " if summ["ratio_is_lower_bound"] else ""
        met = "met" if summ["ratio_meets_goal"] else "not met"
        lines += [
            "",
            f"Largest N with p99 <= 20 ms, 2 workers / 1 worker: **{bound}{ratio:.2f}x** "
            f"(goal >= {summ['ratio_goal']:g}x: {met})"
            + (f"; {summ['ratio_note']}" if summ["ratio_note"] else "")
            + ".",
        ]
    elif summ["ratio_note"]:
        lines += ["", f"2 workers / 1 worker: {summ['ratio_note']}."]
    return lines


def _not_held_text(rows: Sequence[dict[str, Any]]) -> str:
    """``"200 (p99 224 ms; other-load 58%)"`` for each step that did not hold."""
    parts = []
    for row in rows:
        why = f"p99 {_f(row['rtt_p99_ms'], 0)} ms"
        if row["flags"]:
            why += "; " + ", ".join(row["flags"])
        parts.append(f"{row['sessions']} ({why})")
    return ", ".join(parts) or "-"


def _sweep_markdown(document: dict[str, Any], sweep: dict[str, Any]) -> list[str]:
    """One worker count: its sweep table, churn, summary and targets."""
    reused = any(e.get("direct_reused") for e in sweep["steps"])
    lines = [
        "",
        f"## WORKERS={sweep['workers']}",
        "",
        f"Idle proxy RSS {sweep['idle_rss_bytes'] / 2**20:.1f} MiB"
        + (" (supervisor and workers)" if sweep["workers"] > 1 else "")
        + (f"; the sweep took {sweep['wall_seconds']:.0f} s." if sweep.get("wall_seconds") else ".")
        + (
            " Direct columns marked * repeat the baseline measured in an earlier sweep "
            "(it does not depend on the proxy)."
            if reused
            else ""
        ),
        "",
        "| N | offered fr/s | delivered fr/s proxy / direct | proxy rtt p50 / p95 / p99 ms "
        "| direct rtt p50 / p95 / p99 ms | added p50 / p99 ms | proxy CPU % | proxy CPU ms/frame "
        "| proxy / emulator CPU per frame | emulator / generator / other CPU % | proxy RSS MiB "
        "| RSS/session KiB | sessions per worker "
        "| set-up p50 / p99 ms proxy | set-up p50 / p99 ms direct | flags |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|",
    ]
    for entry in sweep["steps"]:
        proxy, direct = entry["proxy"], entry.get("direct")
        star = "*" if entry.get("direct_reused") else ""
        cpu = proxy["cpu_pct"]
        added = f"{_f(_added(entry, 'p50'), 2)} / {_f(_added(entry, 'p99'), 2)}"
        flag_text = ", ".join(proxy["flags"])
        if direct is not None and direct["flags"]:
            flag_text += ("; " if flag_text else "") + "direct: " + ", ".join(direct["flags"])
        lines.append(
            "| "
            + " | ".join(
                [
                    str(entry["sessions"]),
                    f"{proxy['offered_per_s']:.0f}",
                    f"{proxy['delivered_per_s']:.0f} / "
                    + (f"{direct['delivered_per_s']:.0f}{star}" if direct else "-"),
                    _pcts(proxy["rtt_ms"]),
                    _pcts(direct["rtt_ms"]) + star if direct else "-",
                    added if direct else "-",
                    f"{cpu['proxy']:.0f}",
                    _f(proxy["proxy_cpu_ms_per_frame"], 3),
                    _f(proxy.get("proxy_vs_emulator_cpu"), 2),
                    f"{cpu['emulator']:.0f} / {cpu['loadgen']:.0f} / {cpu['other']:.0f}",
                    f"{proxy['proxy_rss_bytes'] / 2**20:.1f}",
                    _f(proxy["rss_per_session_kib"]),
                    per_worker_text(proxy),
                    _pcts(proxy["setup_ms"], ("p50", "p99")),
                    _pcts(direct["setup_ms"], ("p50", "p99")) + star if direct else "-",
                    flag_text,
                ]
            )
            + " |"
        )
    if sweep.get("stop_reason"):
        lines += ["", f"Sweep stopped: {sweep['stop_reason']}."]
    lines += _churn_markdown(sweep)
    summ = sweep["summary"]
    largest = summ["largest_n_added_p99_under_20ms"]
    capacity = summ["largest_n_p99_under_20ms"]
    lines += [
        "",
        f"### Summary (WORKERS={sweep['workers']})",
        "",
        f"- Largest N with proxy rtt p99 <= 20 ms (not saturated, >= 98 % delivered): "
        f"**{capacity if capacity is not None else 'none'}**"
        + ("" if summ["p99_limit_found"] or capacity is None else " (the sweep's largest N)")
        + f"; N that did not hold: {_not_held_text(summ.get('p99_not_held') or [])}",
        f"- Largest N whose p99 added latency (proxy p99 - direct p99) stays under 20 ms: "
        f"**{largest if largest is not None else 'none'}**"
        + (f" ({summ['largest_n_note']})" if summ["largest_n_note"] else ""),
        f"- First bottleneck: {summ['first_bottleneck'] or NO_BOTTLENECK}",
        "",
        f"### Targets (issue #6, WORKERS={sweep['workers']})",
        "",
        "| target | measured | result |",
        "|---|---|---|",
    ]
    lines += [f"| {c['target']} | {c['measured']} | **{c['status']}** |" for c in checks_of(sweep)]
    return lines


def _churn_markdown(sweep: dict[str, Any]) -> list[str]:
    churn = sweep.get("churn") or {}
    if not churn:
        return []
    lines = [
        "",
        f"### Churn (WORKERS={sweep['workers']})",
        "",
        "| via | streaming | mode | opens/s | open p50 / p95 / p99 ms "
        "| p99 of auth / upgrade / setup ms | failed | close p50 ms "
        "| streams' rtt p50 / p99 ms meanwhile | proxy / emulator / generator CPU % |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for target in ("proxy", "direct"):
        run = churn.get(target)
        if not run:
            continue
        for key in ("burst", "paced"):
            phase = run.get(key)
            if phase is None:
                continue
            mode = (
                f"paced {phase['offered_per_s']:.0f}/s"
                if key == "paced"
                else f"burst, {phase['workers']} loops"
            )
            cpu = phase["cpu_pct"]
            lines.append(
                f"| {target} | {run['opened_streams']} | {mode} | {phase['opens_per_s']} "
                f"| {_pcts(phase['open_ms'])} | {_parts(phase['open_parts_ms'])} "
                f"| {phase['open_failures'] + phase['skipped']} "
                f"| {_f(phase['close_ms']['p50'], 2)} "
                f"| {_pcts(phase['stream_rtt_ms'], ('p50', 'p99'))} "
                f"| {cpu['proxy']:.0f} / {cpu['emulator']:.0f} / {cpu['loadgen']:.0f} |"
            )
    return lines


def checks_of(document: dict[str, Any]) -> list[dict[str, Any]]:
    checked: list[dict[str, Any]] = document["checks"]
    return checked


def _parts(parts: dict[str, Any]) -> str:
    return " / ".join(_f(parts[k]["p99"], 2) for k in ("auth", "upgrade", "setup"))


# -- PNG ----------------------------------------------------------------------------------------


def _nan(value: float | None) -> float:
    return float("nan") if value is None else value


def plot(document: dict[str, Any], path: Path) -> None:
    """Latency (p50/p99 via the proxy per worker count, and direct) and CPU % vs N."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    direct: dict[int, dict[str, Any]] = {}
    for sweep in document["sweeps"]:
        steps = sweep["steps"]
        label = f"proxy w={sweep['workers']}"
        xs = [e["sessions"] for e in steps]
        for key, marker in (("p50", "o"), ("p99", "^")):
            ys = [_nan(e["proxy"]["rtt_ms"][key]) for e in steps]
            left.plot(xs, ys, "-", marker=marker, label=f"{label} {key}")
        direct.update({e["sessions"]: e["direct"] for e in steps if e.get("direct")})
        right.plot(
            xs, [e["proxy"]["cpu_pct"]["proxy"] for e in steps], "-", marker="o", label=label
        )
        for name, style in (("emulator", "--"), ("loadgen", ":")):
            who = "generator" if name == "loadgen" else name
            ys = [e["proxy"]["cpu_pct"].get(name, 0.0) for e in steps]
            right.plot(xs, ys, style, marker=".", label=f"{who} (w={sweep['workers']} steps)")
    if direct:
        xs = sorted(direct)
        for key, marker in (("p50", "o"), ("p99", "^")):
            ys = [_nan(direct[n]["rtt_ms"][key]) for n in xs]
            left.plot(xs, ys, "--", marker=marker, color="grey", label=f"direct {key}")
    left.axhline(P99_LIMIT_MS, color="grey", linewidth=0.8, linestyle=":")
    left.set_yscale("log")
    left.set_xlabel("concurrent sessions (N)")
    left.set_ylabel("round trip, ms (log)")
    left.set_title("Echo round trip")
    left.grid(True, which="both", alpha=0.3)
    left.legend(fontsize="small")
    right.axhline(100, color="grey", linewidth=0.8, linestyle=":")
    right.set_xlabel("concurrent sessions (N)")
    right.set_ylabel("CPU % (one core = 100)")
    right.set_title("CPU over the window (proxy: supervisor + workers)")
    right.grid(True, alpha=0.3)
    right.legend(fontsize="small")
    meta = document["meta"]
    figure.suptitle(f"liveproxy bench {meta['started']} (commit {meta['git_commit']})")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


# -- files --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Written:
    markdown: Path
    json: Path
    png: Path

    def all(self) -> Iterator[Path]:
        yield from (self.markdown, self.json, self.png)


def write(document: dict[str, Any], out_dir: Path) -> Written:
    """Write ``run-<time>.{md,json,png}`` and copy them to ``latest.*``; returns the latter."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.fromisoformat(document["meta"]["started"]).strftime("%Y%m%d-%H%M%S")
    run = Written(
        out_dir / f"run-{stamp}.md", out_dir / f"run-{stamp}.json", out_dir / f"run-{stamp}.png"
    )
    run.markdown.write_text(markdown(document))
    run.json.write_text(json.dumps(document, indent=2) + "\n")
    plot(document, run.png)
    latest = Written(out_dir / "latest.md", out_dir / "latest.json", out_dir / "latest.png")
    for source, target in zip(run.all(), latest.all(), strict=True):
        shutil.copyfile(source, target)
    return latest


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.report RESULTS.json``: recompute the summaries and the checks with this
    version of the rules, rewrite the JSON (in the current layout: ``sweeps``), the Markdown
    and the PNG next to it, and print the Markdown. The measurements themselves are not
    touched."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m bench.report RESULTS.json", file=sys.stderr)
        return 2
    path = Path(args[0])
    document = normalise(json.loads(path.read_text()))
    finish(document)
    path.write_text(json.dumps(document, indent=2) + "\n")
    text = markdown(document)
    path.with_suffix(".md").write_text(text)
    plot(document, path.with_suffix(".png"))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
