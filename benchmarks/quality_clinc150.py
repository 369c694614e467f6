"""Quality of the assembly on the CLINC150 full test split, against one flat classifier and the big generalist.

    python benchmarks/quality_clinc150.py [--data-dir ../shared/data]

Writes benchmarks/results/quality_clinc150.json and .md. Uses the embedding
cache (so a rerun only retrains the heads); the numbers are deterministic
(seeded L-BFGS on fixed data).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment  # noqa: E402

from manyfold import AssemblyConfig, Registry  # noqa: E402
from manyfold._demo import run_demo  # noqa: E402

TARGETS = """\
- assembly without escalation (experts on MiniLM): in-scope accuracy >= the flat MiniLM classifier
- assembly with escalation: in-scope accuracy >= 97.0% while escalating <= 15% of in-scope requests
- out-of-scope: AUROC >= 0.975, and OOS recall >= 80% at in-scope accuracy >= 95%"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        # the issue-2 figures are pinned to the fixed 13% escalation budget they were set with
        res = run_demo(data_dir=args.data_dir, name="quality", registry=Registry(tmp), log=lambda m: print(m, file=sys.stderr),
                       config=AssemblyConfig(escalation_objective="budget", max_escalation_rate=0.13))
    res.pop("registry")
    res.update(environment())
    rows = {r["system"]: r for r in res["rows"]}
    flat = rows["flat small (MiniLM, one head)"]
    small = rows["assembly (experts only)"]
    esc = rows["assembly + escalation"]
    checks = {
        "experts_only_closed_acc_ge_flat": small["in_scope_accuracy_closed"] >= flat["in_scope_accuracy_closed"],
        "escalation_closed_acc_ge_97": esc["in_scope_accuracy_closed"] >= 0.97,
        "escalation_rate_le_15": esc["escalation_rate"] <= 0.15,
        "oos_auroc_ge_0975": esc["oos_auroc"] >= 0.975,
        "oos_recall_ge_80_at_in_scope_acc_ge_95": esc["oos_recall"] >= 0.80 and esc["in_scope_accuracy"] >= 0.95,
    }
    res["checks"] = checks
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "quality_clinc150.json").write_text(json.dumps(res, indent=2, default=str) + "\n")
    lines = [
        "# CLINC150 quality: the assembly vs one flat classifier vs the big generalist",
        "",
        f"Command: `{res['command']}`  ",
        f"Date: {res['date']}; machine: {res['machine']['cores']} cores, {res['machine']['cpu']}; versions: {res['versions']}",
        "",
        f"Test split: {esc['n_in_scope']} in-scope items (150 intents), {esc['n_oos']} out-of-scope items. "
        "*In-scope acc* is the intent accuracy on in-scope items (closed set); *in-scope acc (OOS on)* also counts an "
        "in-scope item wrongly called out-of-scope as an error. The flat models are at their strongest standard form: "
        "out-of-scope is a trained class (score: p(out_of_scope)), thresholded on the validation split at the same "
        "false-OOS rate as the assembly. Escalation budget pinned at 13% (`escalation_objective='budget'`).",
        "",
        "| system | in-scope acc | in-scope acc (OOS on) | OOS recall | OOS AUROC | escalated (in-scope) | routing acc |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in res["rows"]:
        ra = r.get("routing_accuracy")
        lines.append(f"| {r['system']} | {100 * r['in_scope_accuracy_closed']:.2f}% | {100 * r['in_scope_accuracy']:.2f}% | "
                     f"{100 * r['oos_recall']:.1f}% | {r['oos_auroc']:.4f} | {100 * r['escalation_rate']:.1f}% | "
                     f"{'' if ra is None else f'{100 * ra:.2f}%'} |")
    lines += ["", f"Generalist encoder: `{res['generalist_encoder']}`. Policy chosen on the validation split: "
              f"`{json.dumps({k: round(v, 4) for k, v in res['policy'].items()})}`", "", "Targets (issue #2):", TARGETS, "",
              "Checks: " + ", ".join(f"{k}: {'PASS' if v else 'FAIL'}" for k, v in checks.items()), ""]
    (out / "quality_clinc150.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
