"""The bench report: Markdown and a self-contained HTML page (tables, claims, plots, sample grids), and the
README's systems table generated from it."""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any

from umm.bench.claims import Claim

CATEGORIES = ("single_object", "two_object", "counting", "colours", "position", "colour_attribution",
              "absolute_position")  # every category a level can ask (L1 asks two, L2 three)
README_START, README_END = "<!-- bench-table:start -->", "<!-- bench-table:end -->"


def _num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _m(row: dict, key: str) -> Any:
    return row.get("metrics", {}).get(key)


def _caption_mean(m: dict, split: str = "caption") -> float | None:
    """Mean accuracy of the caption attributes the level varies (shape, colour, size, position; an attribute
    the level never names, such as L1's cell, is NaN and left out)."""
    values = [v for k in ("shape", "colour", "size", "position") if (v := m.get(f"{split}/{k}")) is not None
              and not math.isnan(v)]
    return sum(values) / len(values) if values else None


def _both(test: Any, heldout: Any) -> str:
    """``test / held-out`` in one cell (the in-distribution split first), or the one that was measured."""
    if test is None:
        return _num(heldout)
    return f"{_num(test)} / {_num(heldout)}"


def _headline(row: dict) -> dict[str, str]:
    """The cells of one system's row in the main table."""
    m = row.get("metrics", {})
    caption_mean, caption_test = _caption_mean(m), _caption_mean(m, "caption_test")
    # text -> video / video -> text direction accuracy on the test split, as the "works" reads video (the
    # held-out split's are in the per-system metrics); a video tokenizer: its test reconstructions' direction, the
    # ceiling (test / held-out where both were scored)
    split = "_test" if "t2v_test/direction_accuracy" in m else ""
    t2v, v2t = m.get(f"t2v{split}/direction_accuracy"), m.get(f"v2t{split}/direction_accuracy")
    recon_test, recon = m.get("recon_test/direction_accuracy"), m.get("recon/direction_accuracy", v2t)
    video = _both(t2v, v2t) if t2v is not None else _both(recon_test, recon)
    latency = m.get("seconds/t2i_per_image")
    return {
        "system": row["system"], "cell": row.get("cell", ""), "status": row.get("status", "?"),
        "params (M)": _num(row["parameters"] / 1e6, 2) if "parameters" in row else "–",
        "steps": _num(row.get("steps")), "samples/s": _num(row.get("samples_per_second"), 1),
        "MFU": f"{row['mfu']:.0%}" if row.get("mfu") else "–",
        "peak MB": _num(row.get("peak_rss_mb"), 0),
        "GenEval test / held-out": _both(m.get("geneval_test/overall"), m.get("geneval/overall")),
        "caption attr. test / held-out": _both(caption_test, caption_mean),
        "QA test / held-out": _both(m.get("qa_test/accuracy"), m.get("qa/accuracy")),
        "video dir.": video,
        "R@1 paired test / held-out": _both(m.get("retrieval_test/paired/mean_R@1"), m.get("retrieval/paired/mean_R@1")),
        "R@1 emergent test / held-out": _both(m.get("retrieval_test/emergent/mean_R@1"),
                                              m.get("retrieval/emergent/mean_R@1")),
        "recon MSE": _num(m.get("recon/mse"), 4),
        "s / image": _num(latency, 2),
    }


def _md_table(rows: list[dict[str, str]]) -> str:
    if not rows:
        return "(no rows)"
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(r[k] for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def _geneval_rows(rows: list[dict]) -> list[dict[str, str]]:
    out = []
    for r in rows:
        if _m(r, "geneval/overall") is not None:
            out.append({"system": r["system"], **{c: _num(_m(r, f"geneval/{c}")) for c in CATEGORIES},
                        "overall": _num(_m(r, "geneval/overall"))})
    return out


def _diagnostic_rows(rows: list[dict]) -> list[dict[str, str]]:
    """Why each generator scores what it scores (umm.eval.diagnostics): in- vs out-of-distribution,
    prompt adherence, the tokenizer ceiling, the denoise check."""
    out = []
    for r in rows:
        if _m(r, "geneval/overall") is None:
            continue
        out.append({
            "system": r["system"], "GenEval test": _num(_m(r, "geneval_test/overall")),
            "GenEval held-out": _num(_m(r, "geneval/overall")),
            "prompt/seed change": _num(_m(r, "adherence/prompt_vs_seed"), 2),
            "shape read": _num(_m(r, "adherence/shape"), 2), "colour read": _num(_m(r, "adherence/colour"), 2),
            "count read": _num(_m(r, "adherence/count"), 2), "ceiling": _num(_m(r, "ceiling/accepted"), 2),
            "denoise t0.1": _num(_m(r, "denoise/t0.1"), 2), "denoise t0.5": _num(_m(r, "denoise/t0.5"), 2),
            # fidelity as a distribution distance (umm.eval.fidelity: FID / KID on umm's own ShapesFeatures net)
            "FID": _num(_m(r, "fidelity/fid"), 1), "KID": _num(_m(r, "fidelity/kid"), 4),
        })  # fmt: skip
    return out


def _job_score(metrics: dict) -> tuple[str, float | None]:
    """The score of a system's job: GenEval-like (held-out) for a generator, else mean caption accuracy, else
    the emergent retrieval R@1 of a binder."""
    if "geneval/overall" in metrics:
        return "GenEval", metrics["geneval/overall"]
    caption = [metrics[k] for k in ("caption/shape", "caption/colour") if k in metrics]
    if caption:
        return "caption", sum(caption) / len(caption)
    if "retrieval/emergent/mean_R@1" in metrics:
        return "emergent R@1", metrics["retrieval/emergent/mean_R@1"]
    return "", None


def curve_points(row: dict) -> list[tuple[float, float]]:
    """(training CPU-minutes, job score) at each snapshot and at the end of one system's run."""
    points = [(p["cpu_minutes"], _job_score(p.get("metrics", {}))[1]) for p in row.get("curve", []) if "metrics" in p]
    if row.get("seconds") and row.get("metrics"):
        points.append((row["seconds"] / 60, _job_score(row["metrics"])[1]))
    return [(m, v) for m, v in points if v is not None]


def _curve_rows(rows: list[dict]) -> list[dict[str, str]]:
    out = []
    for r in rows:
        points = curve_points(r)
        if len(points) > 1:
            job = _job_score(r.get("metrics", {}))[0]
            out.append({"system": r["system"], "score": job,
                        "curve (CPU-min: score)": ", ".join(f"{m:.1f}: {v:.3f}" for m, v in points)})
    return out


def _wall_rows(rows: list[dict]) -> list[dict[str, str]]:
    """Each system's wall-clock minutes: training (its CPU budget, on its own core) and scoring (snapshots and the
    final eval); rows reused from an earlier bench or trained before the runner kept these read "–"."""
    def minutes(seconds: Any) -> str:
        return _num(seconds / 60, 1) if isinstance(seconds, (int, float)) else "–"

    return [{"system": r["system"], "train (min)": minutes(r.get("train_wall_seconds")),
             "scoring (min)": minutes(r.get("eval_wall_seconds"))} for r in rows]


def wall_span(rows: list[dict]) -> float | None:
    """Minutes from the first system's start to the last one's end, over the rows this bench ran (None without)."""
    stamped = [r for r in rows if isinstance(r.get("started"), (int, float)) and isinstance(r.get("finished"), (int, float))]
    if not stamped:
        return None
    return (max(r["finished"] for r in stamped) - min(r["started"] for r in stamped)) / 60


def _wall_line(rows: list[dict], meta: dict) -> str:
    span = wall_span(rows)
    line = f"This invocation took {meta['wall_minutes']:.1f} wall-clock minutes" if "wall_minutes" in meta else ""
    if "total_wall_minutes" in meta:  # a resume: the bench's minutes over every invocation that wrote this directory
        line += f" ({meta['total_wall_minutes']:.1f} over the {meta['invocations']} invocations that wrote this report)"
    if span is not None:
        across = " across the invocations (the time between them included)" if meta.get("invocations", 1) > 1 else ""
        line += (f"; its systems ran {span:.1f} minutes from the first start to the last end{across}, "
                 f"{meta.get('jobs', 1)} at a time")
    unstamped = sum(1 for r in rows if r.get("status") in ("ok", "reused") and "finished" not in r)
    if unstamped:
        line += f" ({unstamped} rows finished by an earlier runner without wall-clock stamps are not in that span)"
    return line + "." if line else ""


def plots(rows: list[dict], latency: list[dict], out: Path, level: str | None = None) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    gen = [r for r in rows if _m(r, "geneval/overall") is not None]
    if gen:
        fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(gen)), 3.6))
        width = 0.8 / len(CATEGORIES)
        for i, c in enumerate(CATEGORIES):
            values = [_m(r, f"geneval/{c}") or 0.0 for r in gen]
            ax.bar([j + i * width for j in range(len(gen))], values, width, label=c.replace("_", " "))
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(gen))], [r["system"] for r in gen], rotation=30)
        ax.set_ylim(0, 1)
        ax.set_ylabel("judge accuracy")
        ax.set_title("GenEval-like scores on held-out prompts")
        ax.legend(fontsize=6, ncol=3)
        fig.tight_layout()
        written.append(out / "geneval.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    trained = [r for r in rows if r.get("samples_per_second")]
    if trained:
        fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(trained)), 3.4))
        ax.bar([r["system"] for r in trained], [r["samples_per_second"] for r in trained], color="tab:blue")
        ax.set_ylabel("training samples/s")
        ax2 = ax.twinx()
        ax2.plot([r["system"] for r in trained], [100 * (r.get("mfu") or 0) for r in trained], "o", color="tab:red")
        ax2.set_ylabel("MFU % (red)")
        ax.tick_params(axis="x", rotation=30)
        ax.set_title("Training throughput at equal wall-clock budget")
        fig.tight_layout()
        written.append(out / "throughput.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    if latency:
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        for method in sorted({r["method"] for r in latency}):
            points = sorted((r["tokens"], r["ms_per_image"]) for r in latency if r["method"] == method)
            ax.plot([p[0] for p in points], [p[1] for p in points], "o-", label=method)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("tokens per image")
        ax.set_ylabel("ms per image")
        ax.set_title("Sampling latency vs tokens per image")
        ax.legend(fontsize=7)
        fig.tight_layout()
        written.append(out / "latency.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    curves = [(r["system"], curve_points(r)) for r in rows if len(curve_points(r)) > 1]
    if curves:
        from umm.eval.reference import reference_curve

        fig, ax = plt.subplots(figsize=(6.5, 4))
        for system, points in curves:
            ax.plot([p[0] for p in points], [p[1] for p in points], "o-", label=system)
        reference = reference_curve(level) if level else []
        if reference:
            ax.plot([p.minutes for p in reference], [p.heldout for p in reference], "k--s", label=f"reference ({level})")
        ax.set_xlabel("training CPU-minutes (one thread)")
        ax.set_ylabel("job score (GenEval-like held-out / caption / R@1)")
        ax.set_ylim(0, 1)
        ax.set_title("Time to quality" + (f" at {level}" if level else ""))
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        written.append(out / "time_to_quality.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    recon = [r for r in rows if _m(r, "recon/mse") is not None]
    if recon:
        fig, ax = plt.subplots(figsize=(5.5, 3.2))
        ax.bar([r["system"] for r in recon], [_m(r, "recon/mse") for r in recon],
               color=["tab:green" if r["system"] == "vae" else "tab:gray" for r in recon])
        ax.set_ylabel("reconstruction MSE (held-out)")
        ax.set_title("Quantisation error: discrete tokenizers vs KL-VAE (green)")
        fig.tight_layout()
        written.append(out / "reconstruction.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    return written


def markdown(rows: list[dict], claims: list[Claim], latency: list[dict], meta: dict, figures: list[Path]) -> str:
    parts = [
        "# umm bench report", "",
        f"Command: `{meta['command']}`  ",
        f"Budget: {meta['budget']} per system; evaluation on the `{meta['split']}` split ({meta['n_prompts']} "
        f"prompts, {meta['n_images']} images); machine: {meta['machine']}.", "",
        "## Systems", "", _md_table([_headline(r) for r in rows]), "",
        "GenEval = judge accuracy over the level's categories; caption attr. = mean accuracy of the caption "
        "attributes the level names (shape, colour, size, position); each on the in-distribution test split / "
        "the held-out split (colour-shape pairs never seen in training); video dir. = direction accuracy of "
        "text -> video / video -> text on the test split, colour and shape right too (a video tokenizer's row: of "
        "its reconstructions, test / held-out); "
        "R@1 paired / emergent = mean retrieval R@1 of the modality pairs trained together / never paired, on "
        "the test / held-out split (at L1 the held-out clips fall into 4 colour-shape groups, so a clip's direction "
        "decides most of its retrieval there); "
        "s / image = text-to-image sampling time.", "",
        "## GenEval-like scores by category", "", _md_table(_geneval_rows(rows)), "",
        "## Diagnostics", "",
        "Prompt/seed change: pixel change between two prompts from the same noise over the change between two "
        "seeds (near 0: the text is ignored); shape/colour/count read: how often the judge reads what the prompt "
        "asked; ceiling: judge acceptance of the system's tokenizer/VAE reconstructions; denoise: judge acceptance "
        "of the one-step x0 from the true x_t.", "", _md_table(_diagnostic_rows(rows)), "",
        "## Time to quality", "",
        "Each system's job score at fractions of its budget (`train.snapshots`) and at the end, against its own "
        "training CPU-minutes: the survey's training efficiency, measured as the compute to reach a score.", "",
        _md_table(_curve_rows(rows)), "",
        "## Wall time", "", _wall_line(rows, meta), "", _md_table(_wall_rows(rows)), "",
        "## The survey's claims, measured", "",
    ]
    for c in claims:
        parts += [f"- **{c.statement}** — *{c.verdict}*. Measured: {c.measure}. {c.evidence}"]
    if latency:
        parts += ["", "## Sampling latency", "", _md_table([{k: _num(v, 1) for k, v in r.items()} for r in latency])]
    parts += ["", "## Figures", ""] + [f"![{f.stem}]({f.name})" for f in figures]
    samples = [r["system"] for r in rows if (Path(meta["out"]) / r["system"] / "samples.png").is_file()]
    if samples:
        parts += ["", "## Samples (held-out prompts; `ok`/`x` = the judge's verdict)", ""]
        parts += [f"### {s}\n\n![{s}]({s}/samples.png)\n" for s in samples]
    return "\n".join(parts) + "\n"


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def html_page(rows: list[dict], claims: list[Claim], meta: dict, figures: list[Path]) -> str:
    def table(items: list[dict[str, str]]) -> str:
        if not items:
            return "<p>(none)</p>"
        head = "".join(f"<th>{html.escape(k)}</th>" for k in items[0])
        body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in r.values()) + "</tr>" for r in items)
        return f"<table><tr>{head}</tr>{body}</table>"

    claim_items = "".join(
        f"<li><b>{html.escape(c.statement)}</b> <span class='v {c.verdict.replace(' ', '-')}'>{c.verdict}</span><br>"
        f"<small>{html.escape(c.measure)}</small><br>{html.escape(c.evidence)}</li>" for c in claims)
    figs = "".join(f"<figure><img src='{_data_uri(f)}'><figcaption>{f.stem}</figcaption></figure>" for f in figures)
    samples = ""
    for r in rows:
        path = Path(meta["out"]) / r["system"] / "samples.png"
        if path.is_file():
            samples += f"<h3>{html.escape(r['system'])}</h3><img class='grid' src='{_data_uri(path)}'>"
    style = ("body{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em}table{border-collapse:collapse;"
             "font-size:12px}td,th{border:1px solid #ccc;padding:3px 6px}th{background:#eee}.v{padding:1px 6px;"
             "border-radius:3px}.supported{background:#cfc}.not-supported{background:#fcc}.mixed{background:#ffc}"
             "figure{display:inline-block;margin:4px}img{max-width:100%}img.grid{image-rendering:pixelated}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>umm bench</title><style>{style}</style></head>"
            f"<body><h1>umm bench report</h1><p>Command: <code>{html.escape(meta['command'])}</code><br>Budget: "
            f"{html.escape(meta['budget'])} per system; split {html.escape(meta['split'])}; {html.escape(meta['machine'])}</p>"
            f"<h2>Systems</h2>{table([_headline(r) for r in rows])}<h2>GenEval-like by category</h2>"
            f"{table(_geneval_rows(rows))}<h2>Diagnostics</h2>{table(_diagnostic_rows(rows))}"
            f"<h2>Wall time</h2><p>{html.escape(_wall_line(rows, meta))}</p>{table(_wall_rows(rows))}"
            f"<h2>The survey's claims, measured</h2><ul>{claim_items}</ul>"
            f"<h2>Figures</h2>{figs}<h2>Samples</h2>{samples}</body></html>")


def readme_table(rows: list[dict], meta: dict) -> str:
    keys = ("system", "cell", "params (M)", "samples/s", "GenEval test / held-out", "caption attr. test / held-out",
            "QA test / held-out", "video dir.", "R@1 paired test / held-out", "R@1 emergent test / held-out",
            "recon MSE")
    table = [{k: _headline(r)[k] for k in keys} for r in rows]
    return (f"Generated by `{meta['command']}` ({meta['budget']} of training per system on {meta['machine']}; "
            f"held-out split). Report: [{meta['report']}]({meta['report']}).\n\n" + _md_table(table))


def readme_markers(level: str | None) -> tuple[str, str]:
    """The README markers a bench fills: the main systems table for the first bench level (L1) or a bench
    without one; ``<!-- bench-table-l3:start -->`` ... for a bench at any other level."""
    if level in (None, "L1"):
        return README_START, README_END
    return f"<!-- bench-table-{level.lower()}:start -->", f"<!-- bench-table-{level.lower()}:end -->"


def update_readme(readme: Path, table: str, level: str | None = None) -> bool:
    """Replace the text between the bench-table markers of ``level``; False if the README has no such markers."""
    start, end = readme_markers(level)
    text = readme.read_text()
    if start not in text or end not in text:
        return False
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f"{head}{start}\n{table}\n{end}{tail}")
    return True


def write_report(out: Path, rows: list[dict], claims: list[Claim], latency: list[dict], meta: dict) -> tuple[Path, Path]:
    level = meta.get("level")
    figures = plots(rows, latency, out, level if level in ("L1", "L2", "L3", "L4") else None)
    (out / "results.json").write_text(json.dumps({"meta": meta, "rows": rows, "latency": latency,
                                                   "claims": [c.__dict__ for c in claims]}, indent=2, default=str))
    md = out / "report.md"
    md.write_text(markdown(rows, claims, latency, meta, figures))
    page = out / "report.html"
    page.write_text(html_page(rows, claims, meta, figures))
    return md, page
