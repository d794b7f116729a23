"""The bench's outputs: flags, the summary and target checks, Markdown, JSON and a PNG plot.

Everything here works from the results document ``run.py`` builds (the JSON file), so a stored
run can be rendered again: ``python -m bench.report bench/results/latest.json``.
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


def progress_line(step: dict[str, Any]) -> str:
    cpu = step["cpu_pct"]
    return (
        f"{step['target']:>6} N={step['sessions']:<4} delivered {step['delivered_per_s']:>7.1f}"
        f"/{step['offered_per_s']:.0f} fr/s  rtt p50/p95/p99 {_pcts(step['rtt_ms'])} ms  "
        f"cpu proxy {cpu.get('proxy', 0):.0f}% emulator {cpu.get('emulator', 0):.0f}% "
        f"generator {cpu.get('loadgen', 0):.0f}% other {cpu.get('other', 0):.0f}%"
        + (f"  [{', '.join(step['flags'])}]" if step["flags"] else "")
    )


def churn_line(churn: dict[str, Any]) -> str:
    parts = [f"{churn['target']:>6} churn with {churn['opened_streams']} streaming:"]
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
    return {
        "largest_n_added_p99_under_20ms": largest,
        "largest_n_note": note,
        "first_bottleneck": bottleneck,
        "stop_reason": document.get("stop_reason"),
    }


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
        and (proxy["delivered_ratio"] or 0) >= 0.98
        and p99 is not None
        and p99 <= 20
    )


# -- Markdown -----------------------------------------------------------------------------------


def markdown(document: dict[str, Any]) -> str:
    """The report as Markdown: sweep table, churn table, summary and target checks."""
    meta, options = document["meta"], document["meta"]["options"]
    dirty = " + local changes" if meta.get("git_dirty") else ""
    lines = [
        f"# liveproxy bench — {meta['started']}",
        "",
        f"Commit `{meta['git_commit']}`{dirty}, Python {meta['python']}, {meta['cpus']} CPUs "
        f"(shared by the proxy, the emulator and the generator). Each session sends "
        f"{options['frame_bytes']} B every {options['interval_ms']:g} ms; warm-up "
        f"{options['warmup']:g} s, window {options['duration']:g} s per step; generator client "
        f"`{options['client']}`. Run took {document['wall_seconds']:.0f} s. Idle proxy RSS "
        f"{document['idle_rss_bytes'] / 2**20:.1f} MiB.",
        "",
        "| N | offered fr/s | delivered fr/s proxy / direct | proxy rtt p50 / p95 / p99 ms "
        "| direct rtt p50 / p95 / p99 ms | added p50 / p99 ms | proxy CPU % | proxy CPU ms/frame "
        "| proxy / emulator CPU per frame | emulator / generator / other CPU % | proxy RSS MiB "
        "| RSS/session KiB "
        "| set-up p50 / p99 ms proxy | set-up p50 / p99 ms direct | flags |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for entry in document["steps"]:
        proxy, direct = entry["proxy"], entry.get("direct")
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
                    + (f"{direct['delivered_per_s']:.0f}" if direct else "-"),
                    _pcts(proxy["rtt_ms"]),
                    _pcts(direct["rtt_ms"]) if direct else "-",
                    added if direct else "-",
                    f"{cpu['proxy']:.0f}",
                    _f(proxy["proxy_cpu_ms_per_frame"], 3),
                    _f(proxy.get("proxy_vs_emulator_cpu"), 2),
                    f"{cpu['emulator']:.0f} / {cpu['loadgen']:.0f} / {cpu['other']:.0f}",
                    f"{proxy['proxy_rss_bytes'] / 2**20:.1f}",
                    _f(proxy["rss_per_session_kib"]),
                    _pcts(proxy["setup_ms"], ("p50", "p99")),
                    _pcts(direct["setup_ms"], ("p50", "p99")) if direct else "-",
                    flag_text,
                ]
            )
            + " |"
        )
    if document.get("stop_reason"):
        lines += ["", f"Sweep stopped: {document['stop_reason']}."]
    lines += _churn_markdown(document)
    summ = document["summary"]
    largest = summ["largest_n_added_p99_under_20ms"]
    lines += [
        "",
        "## Summary",
        "",
        f"- Largest N whose p99 added latency (proxy p99 - direct p99) stays under 20 ms: "
        f"**{largest if largest is not None else 'none'}**"
        + (f" ({summ['largest_n_note']})" if summ["largest_n_note"] else ""),
        f"- First bottleneck: {summ['first_bottleneck'] or NO_BOTTLENECK}",
        "",
        "## Targets (issue #6)",
        "",
        "| target | measured | result |",
        "|---|---|---|",
    ]
    lines += [
        f"| {c['target']} | {c['measured']} | **{c['status']}** |" for c in checks_of(document)
    ]
    lines += [
        "",
        "rtt: from handing a frame to the WebSocket to receiving its echo. CPU: psutil over the "
        "window, one core = 100 %; `other` = the machine's busy time not used by the bench "
        "(someone else's load). See bench/README.md.",
        "",
    ]
    return "\n".join(lines)


def _churn_markdown(document: dict[str, Any]) -> list[str]:
    churn = document.get("churn") or {}
    if not churn:
        return []
    lines = [
        "",
        "## Churn",
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
    """Latency (p50/p99 via proxy and direct) and CPU % vs N, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = document["steps"]
    ns = [e["sessions"] for e in steps]
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    for target, style in (("proxy", "-"), ("direct", "--")):
        rows = [e for e in steps if e.get(target)]
        xs = [e["sessions"] for e in rows]
        for key, marker in (("p50", "o"), ("p99", "^")):
            ys = [_nan(e[target]["rtt_ms"][key]) for e in rows]
            left.plot(xs, ys, style, marker=marker, label=f"{target} {key}")
    left.axhline(ADDED_P99_LIMIT_MS, color="grey", linewidth=0.8, linestyle=":")
    left.set_yscale("log")
    left.set_xlabel("concurrent sessions (N)")
    left.set_ylabel("round trip, ms (log)")
    left.set_title("Echo round trip")
    left.grid(True, which="both", alpha=0.3)
    left.legend()
    for name in ("proxy", "emulator", "loadgen"):
        ys = [e["proxy"]["cpu_pct"].get(name, 0.0) for e in steps]
        label = "generator" if name == "loadgen" else name
        right.plot(ns, ys, marker="o", label=f"{label} (via-proxy steps)")
    right.plot(ns, [e["proxy"]["cpu_pct"]["other"] for e in steps], ":", label="other load")
    right.axhline(100, color="grey", linewidth=0.8, linestyle=":")
    right.set_xlabel("concurrent sessions (N)")
    right.set_ylabel("CPU % (one core = 100)")
    right.set_title("CPU over the window")
    right.grid(True, alpha=0.3)
    right.legend()
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
    """``python -m bench.report RESULTS.json``: recompute the summary and the checks with this
    version of the rules, rewrite the JSON, the Markdown and the PNG next to it, and print the
    Markdown. The measurements themselves are not touched."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m bench.report RESULTS.json", file=sys.stderr)
        return 2
    path = Path(args[0])
    document = json.loads(path.read_text())
    document["summary"] = summary(document)
    document["checks"] = checks(document)
    path.write_text(json.dumps(document, indent=2) + "\n")
    text = markdown(document)
    path.with_suffix(".md").write_text(text)
    plot(document, path.with_suffix(".png"))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
