#!/usr/bin/env python3
"""Renders saeforge benchmark results (JSON lines from bench/run.sh) as terminal tables and an
SVG plot (tokens/s vs n per architecture; fraction of the GEMM-only limit). Standard library only.

usage: bench/report.py [RESULTS.jsonl] [--run ID | --all] [--svg [PATH]] [--markdown]
Without RESULTS the newest bench/results/*.jsonl is used; without --run the run appended last."""
import argparse
import glob
import json
import math
import os
import sys

PHASES = ["upload", "encode", "gate", "select", "decode", "auxk", "backward", "optimizer", "stats"]
ARCH_COLORS = {"topk": "#1f77b4", "gsae": "#d62728", "batchtopk": "#2ca02c", "matryoshka": "#9467bd"}
DASHES = ["", "6,3", "2,2", "8,3,2,3"]


def newest_results():
    files = glob.glob(os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "*.jsonl"))
    if not files:
        sys.exit("report.py: no bench/results/*.jsonl yet; run `make bench` first")
    return max(files, key=os.path.getmtime)


def load(path, run, all_runs):
    recs = []
    with open(path) as f:
        for i, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                recs.append(json.loads(line))
            except json.JSONDecodeError as e:
                print(f"report.py: {path}:{i}: skipped a line that is not JSON ({e})", file=sys.stderr)
    if not recs:
        sys.exit(f"report.py: {path} holds no results")
    if not all_runs:
        runs = [r.get("run") for r in recs if r.get("run")]
        want = run or (runs[-1] if runs else None)  # the run appended last
        if want:
            recs = [r for r in recs if r.get("run") == want]
            if not recs:
                sys.exit(f"report.py: run {want} is not in {path}")
    return recs


def fmt(v, spec=".3g", none="-"):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return none
    return format(v, spec)


def table(rows, header, markdown):
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)] if rows else [len(h) for h in header]
    out = []
    if markdown:
        out.append("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
        out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        for r in rows:
            out.append("| " + " | ".join(str(x).ljust(w) for x, w in zip(r, widths)) + " |")
    else:
        out.append("  ".join(h.ljust(w) for h, w in zip(header, widths)))
        out.append("  ".join("-" * w for w in widths))
        for r in rows:
            out.append("  ".join(str(x).ljust(w) for x, w in zip(r, widths)))
    return "\n".join(out)


def step_key(r):
    c = r["config"]
    return (c["backend"], c["d"], c["n"], c["k"], list(ARCH_COLORS).index(c["arch"]) if c["arch"] in ARCH_COLORS else 9)


def step_table(steps, markdown):
    rows = []
    for r in sorted(steps, key=step_key):
        c = r["config"]
        head = [c["backend"], c["arch"], c["d"], c["n"], c["k"], c["B"], c.get("precision", "fp32")]
        if "skipped" in r:
            rows.append(head + ["skipped: " + r["skipped"]] + [""] * 9)
            continue
        f = r["figures"]
        ph = r.get("phases_s", {})
        tot = sum(v for v in ph.values() if isinstance(v, (int, float)))
        top = sorted(((v, k) for k, v in ph.items() if isinstance(v, (int, float)) and v > 0), reverse=True)[:3]
        phase_txt = " ".join(f"{k} {100 * v / tot:.0f}%" for v, k in top) if tot > 0 else "-"
        rep = r.get("profile", r.get("replica", {}))  # "replica": results before the backend timers
        rows.append(head + [
            fmt(f.get("step_med_s"), ".4f"), fmt(f.get("step_min_s"), ".4f"),
            fmt(f.get("tokens_per_s"), ",.0f"), fmt(f.get("gemm_med_s"), ".4f"),
            fmt(f.get("step_over_gemm"), ".2f"), fmt(f.get("gemm_gflops"), ".0f"),
            fmt(f.get("copy_GBps"), ".1f"), phase_txt,
            fmt(rep.get("sum_over_backend"), ".2f"),
            fmt(f.get("rss_peak_MiB"), ".0f") + ("/" + fmt(f.get("dev_MiB"), ".0f") if (f.get("dev_MiB") or -1) >= 0 else ""),
        ])
    header = ["backend", "arch", "d", "n", "k", "B", "prec", "step med s", "step min s", "tokens/s",
              "GEMM s", "step/GEMM", "GEMM GFLOP/s", "copy GB/s", "top phases",
              "phases/step", "RSS[/dev] MiB"]
    # skipped rows carry the reason in one column; pad them to the header
    rows = [r + [""] * (len(header) - len(r)) if len(r) < len(header) else r[:len(header)] for r in rows]
    return table(rows, header, markdown)


def phase_table(steps, markdown):
    rows = []
    for r in sorted(steps, key=step_key):
        if "skipped" in r or "phases_s" not in r:
            continue
        c, ph = r["config"], r["phases_s"]
        rows.append([c["backend"], c["arch"], c["d"], c["n"], c["k"]] +
                    [fmt(1e3 * ph.get(p, 0.0), ".1f") for p in ["data_wait"] + PHASES] +
                    [fmt(1e3 * r.get("profile", r.get("replica", {})).get("phase_sum_s", float("nan")), ".1f"),
                     fmt(1e3 * r["figures"].get("step_med_s", float("nan")), ".1f")])
    header = ["backend", "arch", "d", "n", "k", "data_wait"] + PHASES + ["sum", "backend step"]
    return table(rows, header, markdown) if rows else ""


def wait_with_first(f):
    """Waiting share of the loop counting the cold start (the first batch's read) as well."""
    try:
        first = f["loop_first_wait_s"]
        return (f["loop_wait_s"] + first) / (f["loop_s"] + first)
    except (KeyError, TypeError, ZeroDivisionError):
        return float("nan")


def data_table(data, markdown):
    rows = []
    for r in data:
        c, f = r["config"], r["figures"]
        rows.append([c["dtype"], c["d"], fmt(f.get("shard_MiB"), ".0f"), c["B"], c["window"],
                     fmt(f.get("reader_seq_GBps"), ".2f"), fmt(f.get("reader_shuffled_GBps"), ".2f"),
                     f"{c['loop_arch']} n={c['loop_n']} k={c['loop_k']} x{c['loop_steps']}",
                     fmt(f.get("loop_step_s"), ".3f"), fmt(100 * f.get("loop_wait_frac", float("nan")), ".2f"),
                     fmt(100 * wait_with_first(f), ".2f")])
    header = ["dtype", "d", "shard MiB", "B", "window", "reader seq GB/s", "reader shuffled GB/s",
              "training loop", "step s", "wait % (steady)", "wait % (incl. 1st batch)"]
    return table(rows, header, markdown)


def kernel_table(kern, markdown):
    rows = []
    for r in kern:
        c, f = r.get("config", {}), r.get("figures", {})
        rows.append([c.get("op", r.get("kernel", "?")), c.get("impl", "?"), c.get("B", "-"), c.get("d", "-"),
                     c.get("n", "-"), c.get("k", "-"), fmt(1e3 * f["min_s"], ".3f") if "min_s" in f else "-",
                     fmt(1e3 * f["med_s"], ".3f") if "med_s" in f else "-", fmt(f.get("GBps"), ".1f"),
                     fmt(f.get("gflops"), ".1f")])
    header = ["op", "impl", "B", "d", "n", "k", "min ms", "median ms", "GB/s", "GFLOP/s"]
    return table(rows, header, markdown)


def targets(steps, data):
    """The issue's three CPU targets, when this run measured them."""
    out = []
    for r in steps:
        c = r["config"]
        if (c["backend"], c["arch"], c["d"], c["n"], c["k"], c["B"]) == ("cpu", "topk", 768, 16384, 32, 4096) \
                and "figures" in r:
            v = r["figures"]["step_over_gemm"]
            out.append(f"step / encoder GEMM (cpu, topk d=768 n=16384 k=32 B=4096): {v:.2f}  "
                       f"(target <= 1.5: {'met' if v <= 1.5 else 'NOT met'})")
    for r in data:
        f = r["figures"]
        for key, label in (("reader_seq_GBps", "sequential"), ("reader_shuffled_GBps", "shuffled")):
            v = f.get(key)
            if v is not None:
                out.append(f"reader from page-cached f16, {label}: {v:.2f} GB/s  "
                           f"(target >= 1: {'met' if v >= 1.0 else 'NOT met'})")
        w = f.get("loop_wait_frac")
        if w is not None:
            out.append(f"training loop time waiting for data: {100 * w:.2f}% steady state, "
                       f"{100 * wait_with_first(f):.2f}% counting the first batch  "
                       f"(target < 5%: {'met' if w < 0.05 else 'NOT met'})")
    return out


# ---- SVG ----------------------------------------------------------------------------------------
def esc(s):
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def nice_ticks(lo, hi, count=5):
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / count
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=mag * 10)
    t = math.floor(lo / step) * step
    ticks = [t]
    while ticks[-1] < hi - 1e-9 * step:  # the last tick is at or above hi
        ticks.append(ticks[-1] + step)
    return ticks


def panel(x0, y0, w, h, series, title, ylabel, ymax_hint=None, hline=None):
    """series: list of (label, color, dash, [(n, y)]). x is log2(n)."""
    pts = [p for s in series for p in s[3]]
    parts = [f'<g font-family="sans-serif" font-size="11">',
             f'<text x="{x0 + w / 2}" y="{y0 - 10}" text-anchor="middle" font-size="13">{esc(title)}</text>',
             f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" stroke="#444"/>']
    if not pts:
        parts.append(f'<text x="{x0 + w / 2}" y="{y0 + h / 2}" text-anchor="middle">no data</text></g>')
        return "\n".join(parts)
    xs = sorted({math.log2(p[0]) for p in pts})
    xlo, xhi = (xs[0] - 0.5, xs[-1] + 0.5)
    ymax = max(p[1] for p in pts)
    if ymax_hint:
        ymax = max(ymax, ymax_hint)
    yt = nice_ticks(0, ymax * 1.08)
    ylo, yhi = 0, yt[-1]

    def X(n):
        return x0 + (math.log2(n) - xlo) / (xhi - xlo) * w

    def Y(v):
        return y0 + h - (v - ylo) / (yhi - ylo) * h

    for t in yt:
        parts.append(f'<line x1="{x0}" x2="{x0 + w}" y1="{Y(t):.1f}" y2="{Y(t):.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{x0 - 5}" y="{Y(t) + 4:.1f}" text-anchor="end">{t:g}</text>')
    for xv in xs:
        n = 2 ** xv
        parts.append(f'<text x="{X(n):.1f}" y="{y0 + h + 15}" text-anchor="middle">{int(round(n))}</text>')
    parts.append(f'<text x="{x0 + w / 2}" y="{y0 + h + 32}" text-anchor="middle">n (latents, log scale)</text>')
    parts.append(f'<text transform="translate({x0 - 48},{y0 + h / 2}) rotate(-90)" text-anchor="middle">{esc(ylabel)}</text>')
    if hline is not None and ylo <= hline <= yhi:
        parts.append(f'<line x1="{x0}" x2="{x0 + w}" y1="{Y(hline):.1f}" y2="{Y(hline):.1f}" stroke="#888" stroke-dasharray="4,4"/>')
    for label, color, dash, sp in series:
        sp = sorted(sp)
        if len(sp) > 1:
            path = " ".join(f"{X(n):.1f},{Y(v):.1f}" for n, v in sp)
            da = f' stroke-dasharray="{dash}"' if dash else ""
            parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"{da}/>')
        for n, v in sp:
            parts.append(f'<circle cx="{X(n):.1f}" cy="{Y(v):.1f}" r="3.5" fill="{color}"><title>{esc(label)}: n={n} {v:.4g}</title></circle>')
    parts.append("</g>")
    return "\n".join(parts)


def svg(steps, machine, run):
    ok = [r for r in steps if "figures" in r]
    groups = {}
    for r in ok:
        c = r["config"]
        groups.setdefault((c["arch"], c["d"], c["k"], c["backend"]), []).append(r)
    dk = sorted({(c[1], c[2]) for c in groups})
    s_tok, s_frac = [], []
    for (arch, d, k, be), rs in sorted(groups.items(), key=lambda g: (list(ARCH_COLORS).index(g[0][0]) if g[0][0] in ARCH_COLORS else 9, g[0][1:])):
        color = ARCH_COLORS.get(arch, "#333")
        dash = DASHES[dk.index((d, k)) % len(DASHES)]
        label = f"{arch} d={d} k={k} ({be})"
        s_tok.append((label, color, dash, [(r["config"]["n"], r["figures"]["tokens_per_s"]) for r in rs]))
        s_frac.append((label, color, dash, [(r["config"]["n"], 1.0 / r["figures"]["step_over_gemm"]) for r in rs]))
    W, H = 980, 470
    body = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}">',
            '<rect width="100%" height="100%" fill="white"/>',
            f'<text x="{W / 2}" y="20" text-anchor="middle" font-family="sans-serif" font-size="14">'
            f'saeforge whole-step benchmark: {esc(machine)} ({esc(run)})</text>',
            panel(80, 60, 340, 280, s_tok, "training throughput", "tokens / s"),
            panel(540, 60, 340, 280, s_frac, "fraction of the GEMM-only limit", "GEMM time / step time",
                  ymax_hint=1.0, hline=1.0)]
    # legend: colours = arch, dashes = (d, k)
    y = 400
    xl = 80
    for arch, color in ARCH_COLORS.items():
        body.append(f'<line x1="{xl}" x2="{xl + 24}" y1="{y}" y2="{y}" stroke="{color}" stroke-width="3"/>'
                    f'<text x="{xl + 30}" y="{y + 4}" font-family="sans-serif" font-size="11">{arch}</text>')
        xl += 130
    xl = 80
    for i, (d, k) in enumerate(dk):
        da = DASHES[i % len(DASHES)]
        dattr = f' stroke-dasharray="{da}"' if da else ""
        body.append(f'<line x1="{xl}" x2="{xl + 24}" y1="{y + 24}" y2="{y + 24}" stroke="#333" stroke-width="2"{dattr}/>'
                    f'<text x="{xl + 30}" y="{y + 28}" font-family="sans-serif" font-size="11">d={d} k={k}</text>')
        xl += 130
    body.append("</svg>")
    return "\n".join(body) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="?", help="a results .jsonl (default: the newest in bench/results)")
    ap.add_argument("--run", help="the run id to show (default: the run appended last)")
    ap.add_argument("--all", action="store_true", help="every run in the file")
    ap.add_argument("--svg", nargs="?", const="", help="write the SVG plot (default: beside the results)")
    ap.add_argument("--markdown", action="store_true", help="tables in Markdown")
    a = ap.parse_args()
    path = a.results or newest_results()
    if not os.path.exists(path):
        sys.exit(f"report.py: {path} does not exist")
    recs = load(path, a.run, a.all)
    steps = [r for r in recs if r.get("kind") == "step"]
    data = [r for r in recs if r.get("kind") == "data"]
    kern = [r for r in recs if r.get("kind") == "kernel" or ("kernel" in r and "kind" not in r)]
    first = recs[0]
    m = first.get("machine", {})
    machine = f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores" + (
        f", {m.get('gpu')} (driver {m.get('driver')})" if m.get("gpu", "none") != "none" else "")
    run = first.get("run", "?")
    loads = [r.get("loadavg") for r in recs if isinstance(r.get("loadavg"), (int, float))]
    print(f"results {path}\nmachine {machine}; commit {first.get('commit', '?')}; run {run}")
    if loads:
        print(f"1-min load average during the run: {min(loads):.2f} .. {max(loads):.2f}")
    if steps:
        print("\nWhole training step (median of timed steps; GEMM = encoder GEMM alone, same shape and precision)")
        print(step_table(steps, a.markdown))
        pt = phase_table(steps, a.markdown)
        if pt:
            print("\nPhases of the step, ms (the backend's phase timers, median per phase)")
            print(pt)
    if data:
        print("\nData path (float16 shard, page-cached; GB/s of float32 delivered)")
        print(data_table(data, a.markdown))
    if kern:
        print("\nKernels (checked against a reference first)")
        print(kernel_table(kern, a.markdown))
    tg = targets(steps, data)
    if tg:
        print("\nTargets")
        for t in tg:
            print("  " + t)
    if a.svg is not None and steps:
        out = a.svg or os.path.splitext(path)[0] + ".svg"
        with open(out, "w") as f:
            f.write(svg(steps, machine, run))
        print(f"\nplot: {out}")


if __name__ == "__main__":
    main()
