"""The benchmark report: Markdown tables, JSON, and PNG plots (matplotlib, Agg backend)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["write_report"]


def _f(v: Any, pct: bool = False, nd: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{100 * v:.1f}" if pct else f"{v:.{nd}f}"


def _mm(s: dict[str, float] | None, nd: int = 2) -> str:
    if not s:
        return "-"
    return f"{s['median']:.{nd}f} [{s['min']:.{nd}f}-{s['max']:.{nd}f}]"


def _shared(m: dict[str, Any]) -> bool:
    """Was the machine busy with other work when the run started (load average above the core count)?"""
    return m["load_avg_at_start"][0] > (m["cores_visible"] or 1)


def _plots(res: dict[str, Any], out: Path, stem: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    fig, ax = plt.subplots(figsize=(8, 5.5))
    sw = res["sweep"]
    ax.plot(sw["relative_cost"], sw["in_scope_accuracy"], "-", color="0.6", label="assembly top-2: confidence sweep")
    for name, r in res["systems"].items():
        ax.scatter(r["relative_cost"], r["in_scope_accuracy"], s=60 if name.startswith("peer") else 30,
                   marker="*" if name.startswith("peer") else "o")
        ax.annotate(name.replace("assembly_", "A:"), (r["relative_cost"], r["in_scope_accuracy"]), fontsize=6)
    accs = [r["in_scope_accuracy"] for r in res["systems"].values()] + list(sw["in_scope_accuracy"])
    lo = min([a for a in accs if a >= 0.5] or [0.0]) - 0.02
    off = [f"{k} ({100 * r['in_scope_accuracy']:.1f}%)" for k, r in res["systems"].items() if r["in_scope_accuracy"] < lo]
    ax.set_ylim(lo, min(1.0, max(accs) + 0.01))
    if off:
        ax.text(0.01, 0.01, "below the axis: " + ", ".join(off), transform=ax.transAxes, fontsize=6)
    ax.set_xlabel("relative cost per request (generalist = 1.0)")
    ax.set_ylabel("in-scope accuracy")
    m = res["machine"]
    ax.set_title(f"accuracy vs cost, {m['cores_visible']} cores" + (" (timings noisy: shared machine)" if _shared(m) else ""))
    ax.legend(fontsize=7)
    files.append(f"{stem}_pareto.png")
    fig.savefig(out / files[-1], dpi=120, bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, v in res["latency_cdf_ms"].items():
        x = np.sort(v)
        ax.plot(x, np.arange(1, len(x) + 1) / len(x), label=name)
    ax.set_xscale("log")
    ax.set_xlabel("single-request latency, ms (log)")
    ax.set_ylabel("CDF")
    ax.legend(fontsize=6)
    files.append(f"{stem}_latency_cdf.png")
    fig.savefig(out / files[-1], dpi=120, bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    sc = res["scaling"]
    n = [r["n_experts"] for r in sc]
    for key, lab in (("eager_p50_ms", "library router, eager"), ("flatscan_p50_ms", "flat scan, eager"),
                     ("lazy_p50_ms", "flat scan, lazy LRU")):
        ax[0].plot(n, [r[key]["median"] for r in sc], "o-", label=lab)
    ax[0].axhline(1.0, ls=":", color="k")
    ax[0].set(xscale="log", yscale="log", xlabel="experts", ylabel="routing p50 (ms)")
    ax[0].legend(fontsize=7)
    ax[1].plot(n, [r["eager_expert_bytes_traced"] / 2**20 for r in sc], "o-", label="all experts in memory")
    ax[1].plot(n, [r["lazy_loaded_bytes"] / 2**20 for r in sc], "o-", label="lazy LRU (weights loaded)")
    ax[1].set(xscale="log", yscale="log", xlabel="experts", ylabel="MiB")
    ax[1].legend(fontsize=7)
    files.append(f"{stem}_scaling.png")
    fig.savefig(out / files[-1], dpi=120, bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    de = res["data_efficiency"]
    for enc in dict.fromkeys(r["encoder"] for r in de):
        rows = [r for r in de if r["encoder"] == enc]
        ax.plot([r["n_per_intent"] for r in rows], [r["in_scope_accuracy"] for r in rows], "o-",
                label=f"{enc} (cost {rows[0]['relative_cost_encoder']:.2f})")
    ax.set(xscale="log", xlabel="training examples per intent", ylabel="in-scope accuracy (no escalation)")
    ax.legend(fontsize=8)
    files.append(f"{stem}_data_efficiency.png")
    fig.savefig(out / files[-1], dpi=120, bbox_inches="tight")
    plt.close(fig)
    return files


def _md(res: dict[str, Any], stem: str, plots: list[str]) -> str:
    m = res["machine"]
    L = [f"# manyfold bench: {res['call']['dataset']}{' (quick)' if res['call']['quick'] else ''}", "",
         f"Command: `{res['command']}`  ",
         f"Date (UTC): {m['date_utc']}; machine: {m['cpu']}, {m['cores_visible']} cores visible (load average at start "
         f"{', '.join(f'{v:.1f}' for v in m['load_avg_at_start'])}"
         f"{': SHARED with other jobs, every timing is noisy' if _shared(m) else ''}); "
         f"python {m['python']}, manyfold {m['manyfold']}, " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()),
         "", f"Data: {res['dataset']}. Seeds fixed ({res['config']['seed']}); accuracy figures are deterministic on "
         "rerun on this machine; timings are medians over "
         f"{res['config']['repeats']} repeats [min-max].", "",
         "## Systems", "",
         "| system | in-scope acc | macro-F1 | OOS recall | OOS AUROC | domain routing acc | escalation rate "
         "(in-scope) | rel. cost | latency p50 ms | p99 ms | batch items/s | train s | params MiB | infer peak MiB |",
         "|---|" + "---|" * 13]
    for name, r in res["systems"].items():
        ls = r.get("latency_single", {})
        L.append(f"| {name} | {_f(r['in_scope_accuracy'], True)} | {_f(r['macro_f1'], True)} | {_f(r['oos_recall'], True)} | "
                 f"{_f(r['oos_auroc'])} | {_f(r['routing_accuracy'], True)} | {_f(r['escalation_rate'], True)} | "
                 f"{_f(r['relative_cost'])} | {_mm(ls.get('p50_ms'))} | {_mm(ls.get('p99_ms'))} | "
                 f"{_mm(r.get('throughput_batched_items_per_s'), 0)} | {r['train_seconds']:.1f} | "
                 f"{_f(r['param_bytes'] / 2**20, nd=2) if 'param_bytes' in r else '-'} | "
                 f"{_f(r['inference_peak_traced_bytes'] / 2**20, nd=1) if 'inference_peak_traced_bytes' in r else '-'} |")
    L += ["", "Relative cost = measured mean single-request compute (raw encoder forward + heads) over the "
          "generalist's; assembly costs = small-encoder forward + assembly forward + escalation rate (all requests) "
          "x generalist compute. Random / oracle routing reuse the linear router's calibrated policy "
          "(a PresetRouter supplies p(expert|x)). Latency/throughput: raw (uncached) encoders, end to end.", "",
          *([f"**Caveat: timings taken under heavy contention** (load average {m['load_avg_at_start'][0]:.1f} on "
             f"{m['cores_visible']} cores). Single-request times swung about 2x between measurements minutes apart, "
             "and relative costs combine measurements from different moments (encoder-only timings vs end-to-end "
             "ones), so compare costs only within one column and treat them as indicative. Rerun on a quiet "
             "machine before claiming any cost or latency figure. Accuracy figures are unaffected.", ""]
            if _shared(m) else []),
          "## Escalation sweep and APGR", "",
          f"Quality: {res['apgr']['quality']}. small (no escalation) = {_f(res['apgr']['q_small'], True)}, "
          f"everything escalated (fused) = {_f(res['apgr']['q_all_escalated'], True)}; the gap APGR measures runs "
          f"between these two ends of the same cascade (RouteLLM's weak and strong ends). For reference, the "
          f"generalist alone = {_f(res['apgr']['q_big_generalist'], True)}.", "",
          "| escalation order | APGR | share to big for 50% of gap | 80% | 95% |", "|---|---|---|---|---|"]
    for k in ("confidence", "random", "oracle"):
        a = res["apgr"][k]
        L.append(f"| {k} | {_f(a['apgr'])} | {_f(a['share_for_50pct'])} | {_f(a['share_for_80pct'])} | "
                 f"{_f(a['share_for_95pct'])} |")
    ov, peer = res["overhead"]["manyfold_linear_top2"], res["peer"]
    L += ["", "## Routing overhead (outside encoder forward and expert heads)", "",
          "| router | single p50 ms | batched ms/request | domain routing acc | OOS recall |", "|---|---|---|---|---|",
          f"| manyfold linear top-2 (router+top-k+mix+OOS+policy) | {_mm(ov['single_p50_ms'], 3)} | "
          f"{_mm(ov['batched_ms_per_request'], 4)} | {_f(res['systems']['assembly_linear_top2_noesc']['routing_accuracy'], True)} | "
          f"{_f(res['systems']['assembly_linear_top2_noesc']['oos_recall'], True)} |"]
    if "error" in peer:
        L.append(f"\nsemantic-router left out: {peer['error']}")
    else:
        L.append(f"| semantic-router {peer['version']} IndexedRouter (domain routes, same encoder) | "
                 f"{_mm(peer['overhead_single_ms'], 3)} | {_mm(peer['overhead_batched_ms_per_request'], 4)} | "
                 f"{_f(peer['routing_accuracy'], True)} | {_f(peer['oos_recall'], True)} |")
    L += ["", "## Scaling: synthetic experts", "",
          "| experts | routing acc | library router p50 ms | flat-scan p50 ms | flat-scan p99 ms | lazy p50 ms | "
          "eager experts MiB | router MiB | lazy loaded MiB (cap) | LRU hit rate | evictions |", "|---" * 11 + "|"]
    for r in res["scaling"]:
        L.append(f"| {r['n_experts']} | {_f(r['routing_accuracy'], True)} | {_mm(r['eager_p50_ms'], 3)} | "
                 f"{_mm(r['flatscan_p50_ms'], 3)} | {_mm(r['flatscan_p99_ms'], 3)} | {_mm(r['lazy_p50_ms'], 3)} | "
                 f"{r['eager_expert_bytes_traced'] / 2**20:.1f} | {r['router_bytes_traced'] / 2**20:.1f} | "
                 f"{r['lazy_loaded_bytes'] / 2**20:.2f} ({r['lazy_cap_experts']}) | {_f(r['lazy_hit_rate'], True)} | "
                 f"{r['lazy_evictions']} |")
    L += ["", "## Small vs big backbone: data efficiency (assembly without generalist)", "",
          "| encoder | examples/intent | in-scope acc | macro-F1 | OOS AUROC | encoder rel. cost | train s |",
          "|---|---|---|---|---|---|---|"]
    for r in res["data_efficiency"]:
        L.append(f"| {r['encoder']} | {r['n_per_intent']} | {_f(r['in_scope_accuracy'], True)} | {_f(r['macro_f1'], True)} | "
                 f"{_f(r['oos_auroc'])} | {_f(r['relative_cost_encoder'])} | {r['train_seconds']:.1f} |")
    enc = res["encoding"]
    L += ["", "## Encoding", "", "| encoder | items | seconds | cache was empty |", "|---|---|---|---|"]
    for s, e in enc.items():
        L.append(f"| {s} | {e['n_items']} | {e['seconds']:.1f} | {e['cold_cache']} |")
    L += ["", f"Total wall time {res['total_seconds']:.0f} s; peak RSS {res['max_rss_mb']:.0f} MiB.", "",
          "## Which system suits which need", "", _advice(res), "", "Plots: " + ", ".join(f"`{p}`" for p in plots), ""]
    return "\n".join(L)


def _advice(res: dict[str, Any]) -> str:
    s = res["systems"]
    timed = {k: v for k, v in s.items() if v.get("latency_single")}
    best = max(s, key=lambda k: s[k]["in_scope_accuracy"])
    cheap = min(s, key=lambda k: s[k]["relative_cost"])
    fast = min(timed, key=lambda k: timed[k]["latency_single"]["p50_ms"]["median"])
    a, g = s["assembly_linear_top2_esc"], s["generalist"]
    p50 = lambda k: timed[k]["latency_single"]["p50_ms"]["median"]  # noqa: E731
    p99 = lambda k: timed[k]["latency_single"]["p99_ms"]["median"]  # noqa: E731
    text = (f"**Cost:** cheapest is **{cheap}** (cost {s[cheap]['relative_cost']:.2f}, in-scope accuracy "
            f"{100 * s[cheap]['in_scope_accuracy']:.1f}%), for high-volume traffic where a few points of accuracy and "
            f"out-of-scope recall matter less than compute. **Accuracy:** the best in-scope accuracy here is "
            f"**{best}** ({100 * s[best]['in_scope_accuracy']:.1f}%, cost {s[best]['relative_cost']:.2f}). "
            f"**Latency:** the lowest single-request p50 is **{fast}** ({p50(fast):.1f} ms). The escalating assembly "
            f"(top-2, calibrated) reaches {100 * a['in_scope_accuracy']:.1f}% in-scope accuracy and "
            f"{100 * a['oos_recall']:.1f}% out-of-scope recall (generalist alone: {100 * g['oos_recall']:.1f}%) at cost "
            f"{a['relative_cost']:.2f}, sending {100 * a['escalation_rate_all']:.1f}% of all requests to the generalist; "
            f"its p50 ({p50('assembly_linear_top2_esc'):.1f} ms) is the small model's but its p99 "
            f"({p99('assembly_linear_top2_esc'):.1f} ms) is the generalist's ({p99('generalist'):.1f} ms), since escalated "
            "requests pay for both. It is the choice when out-of-scope safety and cost both matter, and when domains "
            "must be added or replaced independently (one expert refit, not a monolith); the generalist alone suits "
            "low volume where its cost and latency are no issue.")
    peer = s.get("peer_semantic-router+experts")
    if peer is not None:
        text += (f" The peer (semantic-router in front of the same experts) reaches "
                 f"{100 * peer['in_scope_accuracy']:.1f}% in-scope accuracy and {100 * peer['oos_recall']:.1f}% "
                 f"out-of-scope recall at cost {peer['relative_cost']:.2f} "
                 f"(domain routing {100 * peer['routing_accuracy']:.1f}% vs "
                 f"{100 * a['routing_accuracy']:.1f}% for the learned router).")
    return text + (" Random routing shows what the router buys; oracle routing bounds what a better router could "
                   "add. Read the numbers in the tables, not this summary, when they disagree with your priorities.")


def write_report(res: dict[str, Any], out: Path, stem: str) -> list[Path]:
    """Write ``<stem>.json``, ``<stem>.md`` and the PNG plots into ``out``; returns the paths."""
    out.mkdir(parents=True, exist_ok=True)
    plots = _plots(res, out, stem)
    (out / f"{stem}.json").write_text(json.dumps(res, indent=1, default=float, allow_nan=True))
    (out / f"{stem}.md").write_text(_md(res, stem, plots))
    return [out / f"{stem}.json", out / f"{stem}.md", *(out / p for p in plots)]
