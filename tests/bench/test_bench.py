"""``umm bench`` end to end on the tiny recipes: report files exist and hold one row per registered system."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import umm.models  # noqa: F401
from umm.bench.claims import evaluate_claims
from umm.bench.plan import default_systems, plan
from umm.bench.runner import BenchConfig, dependency_model
from umm.bench.report import README_END, README_START, update_readme
from umm.registry import SYSTEMS

ROOT = Path(__file__).resolve().parents[2]


def test_plan_orders_dependencies_first(tmp_path):
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "vq_s.yaml").write_text("model: vq_s\ntasks: [reconstruct]\n")
    (configs / "chameleon_s.yaml").write_text(
        "model: chameleon_s\nsystem_args: {image_tokenizer: runs/vq_s/model}\ntasks: [t2i]\n")
    entries = plan(["chameleon"], configs, quick=False)
    assert [e.name for e in entries] == ["vq", "chameleon"]
    assert entries[1].dependencies[0].key == "system_args.image_tokenizer"


def test_plan_follows_shared_tokenizer_paths_and_reuses_trained_tokenizers(tmp_path):
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "vq_s.yaml").write_text("model: vq_s\ntasks: [reconstruct]\n")
    (configs / "imagebind_s.yaml").write_text("model: imagebind_s\ntasks: [contrastive]\n")
    (configs / "textbind_s.yaml").write_text(
        "model: textbind_s\ntokenizer: {path: runs/imagebind_s/model}\n"
        "system_args: {encoders: runs/imagebind_s/model, generator: runs/vq_s/model}\ntasks: [caption]\n")
    entries = plan(["textbind"], configs, quick=False)
    assert [e.name for e in entries] == ["imagebind", "vq", "textbind"]
    deps = {d.key: d for d in entries[-1].dependencies}
    assert set(deps) == {"tokenizer.path", "system_args.encoders", "system_args.generator"}
    # a trained tokenizer in the reuse directory stands in for training it; a survey system never does
    trained = tmp_path / "runs" / "vq_s" / "model"
    trained.mkdir(parents=True)
    (trained / "config.json").write_text("{}")
    (tmp_path / "runs" / "imagebind_s" / "model").mkdir(parents=True)
    (tmp_path / "runs" / "imagebind_s" / "model" / "config.json").write_text("{}")
    config = BenchConfig(out=tmp_path / "bench", reuse_from=tmp_path / "runs")
    assert dependency_model(deps["system_args.generator"], config, configs) == trained
    assert dependency_model(deps["tokenizer.path"], config, configs) == tmp_path / "bench" / "imagebind" / "run" / "model"
    assert dependency_model(deps["system_args.generator"], BenchConfig(out=tmp_path / "b"), configs) == \
        tmp_path / "b" / "vq" / "run" / "model"


def test_readme_table_is_replaced_between_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{README_START}\nold\n{README_END}\noutro\n")
    assert update_readme(readme, "| new |")
    assert readme.read_text() == f"intro\n{README_START}\n| new |\n{README_END}\noutro\n"
    # a bench at another level fills its own table and leaves the first one alone
    assert not update_readme(readme, "| l3 |", "L3"), "no L3 markers yet: nothing to replace"
    readme.write_text(readme.read_text() + "<!-- bench-table-l3:start -->\n<!-- bench-table-l3:end -->\n")
    assert update_readme(readme, "| l3 |", "L3")
    assert "| new |" in readme.read_text() and "<!-- bench-table-l3:start -->\n| l3 |\n<!-- bench-table-l3:end -->" in readme.read_text()


@pytest.mark.slow
def test_bench_quick_run_has_a_row_per_registered_system(tmp_path):
    out = tmp_path / "bench"
    cmd = [sys.executable, "-m", "umm.cli", "bench", "--quick", "--out", str(out), "--n-prompts", "6",
           "--n-images", "2", "--no-latency"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=3000)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    rows = {r["system"]: r for r in results["rows"]}
    assert set(default_systems(SYSTEMS.names())) <= set(rows)
    failed = {s: r.get("error") for s, r in rows.items() if r["status"] not in ("ok", "reused", "no recipe")}
    assert not failed, failed
    report = (out / "report.md").read_text()
    for system in rows:
        assert f"| {system} |" in report
    assert (out / "report.html").read_text().startswith("<!doctype html>")
    # resumable: a second run reuses every finished system
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert again.returncode == 0 and again.stdout.count("done before") == len(rows)


def _pids_running(text: str) -> list[int]:
    """Processes whose command line holds ``text`` (Linux /proc)."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text in cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                pids.append(int(cmdline.parent.name))
        except OSError:  # a process that ended while we looked
            continue
    return pids


def _still_running(pids: list[int], grace: float = 10.0) -> list[int]:
    """The pids still alive after up to ``grace`` seconds; an exited child not yet reaped (a zombie) counts as gone."""
    deadline = time.time() + grace
    while True:
        alive = []
        for pid in pids:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state != "Z":
                alive.append(pid)
        if not alive or time.time() > deadline:
            return alive
        time.sleep(0.1)


def test_stopping_the_bench_stops_its_training_and_leaves_the_row_to_the_next_run(tmp_path):
    """SIGTERM to ``umm bench``: the training it started stops too (a signal to the bench does not reach it), and
    the interrupted row writes no result.json, so the next run trains it instead of reusing a failed row."""
    out = tmp_path / "bench"
    cmd = [sys.executable, "-m", "umm.cli", "bench", "--quick-steps", "500", "--systems", "chameleon", "--out",
           str(out), "--n-prompts", "6", "--n-images", "2", "--no-latency", "--jobs", "1"]
    bench = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log, deadline = out / "chameleon" / "bench.log", time.time() + 120
    while not (log.is_file() and "umm.cli train" in log.read_text()) and time.time() < deadline:
        time.sleep(0.1)
    training = [pid for pid in _pids_running(str(out / "chameleon" / "run")) if pid != bench.pid]
    assert training, "the bench never started its training process"
    bench.send_signal(signal.SIGTERM)
    assert bench.wait(timeout=60) == 128 + signal.SIGTERM
    assert not _still_running(training), "the training outlived the bench"
    assert not (out / "chameleon" / "result.json").exists()
    # Ctrl-C: SIGINT to the bench's process group, the training included; the row is left unfinished too
    bench = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)  # its own process group, as a terminal's job
    deadline = time.time() + 120
    while log.read_text().count("umm.cli train") < 2 and time.time() < deadline:
        time.sleep(0.1)
    os.killpg(bench.pid, signal.SIGINT)
    assert bench.wait(timeout=60) == 128 + signal.SIGINT
    assert not (out / "chameleon" / "result.json").exists()


def test_bench_two_systems_quick(tmp_path):
    out = tmp_path / "bench"
    cmd = [sys.executable, "-m", "umm.cli", "bench", "--quick-steps", "2", "--systems", "transfusion,vq", "--out",
           str(out), "--n-prompts", "6", "--n-images", "2", "--jobs", "2"]
    proc = subprocess.run(cmd + ["--publish", str(tmp_path / "docs")], capture_output=True, text=True, cwd=ROOT,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (tmp_path / "docs" / "report.md").is_file() and (tmp_path / "docs" / "transfusion" / "samples.png").is_file()
    rows = {r["system"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    assert rows["transfusion"]["status"] == "ok" and "geneval/overall" in rows["transfusion"]["metrics"]
    assert rows["vq"]["status"] == "ok" and "recon/mse" in rows["vq"]["metrics"]
    assert (out / "transfusion" / "samples.png").is_file()
    report = (out / "report.md").read_text()
    assert "| transfusion |" in report and "| vq |" in report and "claims" in report
    # time to quality: the snapshots at 0.25 and 0.5 of the budget were scored, then the final model
    curve = rows["transfusion"]["curve"]
    assert [p["fraction"] for p in curve] == [0.25, 0.5] and all("geneval/overall" in p["metrics"] for p in curve)
    # a curve point reads the bench's split only (umm eval --no-test-split); the final eval reads both
    assert not any(k.startswith("geneval_test/") for p in curve for k in p["metrics"])
    assert "geneval_test/overall" in rows["transfusion"]["metrics"]
    assert "## Time to quality" in report and (out / "time_to_quality.png").is_file()
    assert "vq" not in {r["system"] for r in json.loads((out / "results.json").read_text())["rows"] if r.get("curve")}
    # wall time: each row's training and scoring, and the span of the systems run side by side
    for row in rows.values():
        assert row["finished"] > row["started"] and row["train_wall_seconds"] > 0 and row["eval_wall_seconds"] > 0
    assert "## Wall time" in report and "This invocation took" in report and "2 at a time" in report
    # the latency sweep ran in the pool beside the rows (its own process and log), and the report reads it
    assert "latency: running beside the rows" in proc.stdout and (out / "latency.log").is_file()
    assert {r["method"] for r in json.loads((out / "latency.json").read_text())} >= {"ar_cached", "diffusion"}
    assert "## Sampling latency" in report
    # run again: every row and the sweep are reused, and the report keeps the first invocation's minutes
    first = json.loads((out / "results.json").read_text())["meta"]["wall_minutes"]
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert again.returncode == 0 and "latency: running" not in again.stdout and again.stdout.count("done before") == 2
    meta = json.loads((out / "results.json").read_text())["meta"]
    assert meta["invocations"] == 2 and meta["total_wall_minutes"] == pytest.approx(first + meta["wall_minutes"])
    report = (out / "report.md").read_text()
    assert "over the 2 invocations that wrote this report" in report and "(the time between them included)" in report


def test_the_wall_time_spans_the_stamped_rows_and_names_the_ones_without():
    from umm.bench.report import markdown, wall_span

    rows = [{"system": "vq", "status": "ok", "started": 100.0, "finished": 460.0, "train_wall_seconds": 300.0,
             "eval_wall_seconds": 60.0},
            {"system": "chameleon", "status": "ok", "started": 400.0, "finished": 1300.0, "train_wall_seconds": 600.0,
             "eval_wall_seconds": 300.0},
            {"system": "vae", "status": "ok"}]  # finished by a runner that kept no stamps
    assert wall_span(rows) == 20.0 and wall_span(rows[2:]) is None
    meta = {"command": "umm bench", "budget": "10 min", "split": "heldout", "n_prompts": 6, "n_images": 2,
            "machine": "cpu", "out": "/nonexistent", "jobs": 2, "wall_minutes": 21.5}
    report = markdown(rows, [], [], meta, [])
    assert "took 21.5 wall-clock minutes; its systems ran 20.0 minutes" in report
    assert "1 rows finished by an earlier runner" in report and "| chameleon | 10.0 | 5.0 |" in report
    assert "| vae | – | – |" in report


def test_claims_read_reused_tokenizers_and_give_verdicts_with_their_figures():
    rows = [{"system": "vae", "status": "reused", "metrics": {"recon/mse": 0.0004}},
            {"system": "vq", "status": "reused", "metrics": {"recon/mse": 0.0006}},
            {"system": "rq", "status": "ok", "metrics": {"recon/mse": 0.0009}},
            {"system": "vqvideo", "status": "ok", "metrics": {"recon/mse": 0.0001, "recon/direction_accuracy": 0.9}},
            {"system": "transfusion", "status": "ok", "samples_per_second": 50.0, "metrics": {"geneval/overall": 0.6}},
            {"system": "chameleon", "status": "ok", "samples_per_second": 100.0, "metrics": {"geneval/overall": 0.1}},
            {"system": "emu3", "status": "train failed"}]
    latency = [{"method": "ar_cached", "tokens": 64, "ms_per_image": 90.0},
               {"method": "diffusion", "tokens": 64, "ms_per_image": 30.0}]
    claims = {c.statement.split()[0] + " " + c.statement.split()[1]: c for c in evaluate_claims(rows, latency, 60)}
    assert claims["Continuous tokens"].verdict == "supported" and "vq 0.0006" in claims["Continuous tokens"].evidence
    assert "vqvideo 0.0001 over clips, not compared" in claims["Continuous tokens"].evidence  # clips are not images
    assert claims["AR+diffusion gives"].verdict == "supported"  # 0.6 vs 0.1 over 60 prompts each
    assert claims["Diffusion inference"].verdict == "supported"
    assert claims["Autoregressive models"].verdict == "supported" and "2.00x" in claims["Autoregressive models"].evidence
    assert claims["Multi-expert models"].verdict == "mixed"  # nothing measured on that side
    assert claims["At equal"].verdict == "mixed"  # no latency measured on trained systems


def test_verdicts_need_intervals_that_exclude_each_other_and_efficiency_reads_the_curves():
    from umm.bench.claims import minutes_to_reach

    def gen(system, score, low, high, curve=(), seconds=600.0, s_image=0.1):
        return {"system": system, "status": "ok", "seconds": seconds, "samples_per_second": 50.0,
                "curve": [{"cpu_minutes": m, "metrics": {"geneval/overall": v}} for m, v in curve],
                "metrics": {"geneval/overall": score, "geneval/overall_ci_low": low, "geneval/overall_ci_high": high,
                            "geneval_test/overall": 0.95, "seconds/t2i_per_image": s_image, "fidelity/fid": 40.0 if system == "transfusion" else 90.0}}

    apart = [gen("transfusion", 0.9, 0.85, 0.95, [(2.5, 0.2), (5.0, 0.6)], s_image=0.09),
             gen("chameleon", 0.6, 0.5, 0.7, [(2.5, 0.1), (5.0, 0.3)], s_image=0.3)]
    claims = {c.statement.split()[0] + " " + c.statement.split()[1]: c for c in evaluate_claims(apart, [], 90)}
    assert claims["AR+diffusion gives"].verdict == "supported" and "95% intervals" in claims["AR+diffusion gives"].evidence
    assert claims["Fidelity as"].verdict == "supported"  # FID 40 vs 90
    assert claims["At equal"].verdict == "supported" and "3.33x" in claims["At equal"].evidence
    # transfusion reaches 0.5 at 4.4 min (between 2.5: 0.2 and 5: 0.6), chameleon at ~6.4 (between 5: 0.3 and 10: 0.6)
    assert minutes_to_reach(apart[0], "geneval/overall", 0.5) == pytest.approx(4.375)
    assert minutes_to_reach(apart[1], "geneval/overall", 0.5) == pytest.approx(5.0 + 5.0 * 0.2 / 0.3)
    assert claims["Autoregressive models"].verdict == "not supported" and "CPU-minutes" in claims["Autoregressive models"].measure
    overlapping = [gen("transfusion", 0.7, 0.6, 0.8), gen("chameleon", 0.6, 0.5, 0.7)]
    claims = {c.statement.split()[0] + " " + c.statement.split()[1]: c for c in evaluate_claims(overlapping, [], 90)}
    assert claims["AR+diffusion gives"].verdict == "mixed" and "overlap" in claims["AR+diffusion gives"].evidence
    assert claims["Autoregressive models"].verdict == "mixed" and "samples/s" in claims["Autoregressive models"].measure  # no curves


def test_the_diagnostics_table_carries_fidelity_beside_the_judge():
    """FID / KID (umm.eval.fidelity) sit in the report's diagnostics rows of every text-to-image system."""
    from umm.bench.report import _diagnostic_rows

    row = {"system": "transfusion", "metrics": {"geneval/overall": 0.5, "fidelity/fid": 123.456, "fidelity/kid": 0.01234}}
    (cells,) = _diagnostic_rows([row, {"system": "vq", "metrics": {"recon/mse": 0.01}}])
    assert cells["FID"] == "123.5" and cells["KID"] == "0.0123"


def test_a_bench_level_trains_each_familys_level_recipe_after_its_inherited_dependencies():
    from umm.recipes import RECIPES_DIR

    entries = {e.name: e for e in plan(["chameleon", "vila_u", "emu3", "fsq"], RECIPES_DIR, quick=False, level="L1")}
    # vq: runs/vq_l1/model; EMU3 reads the video tokenizer vqvideo_l1, which starts from vq_l1
    assert list(entries) == ["vq", "chameleon", "vila_u_tower", "vila_u", "vqvideo", "emu3", "fsq"]
    assert entries["vq"].recipe.name == "vq_l1.yaml" and entries["vila_u_tower"].recipe.name == "vila_u_tower_l1.yaml"
    assert entries["chameleon"].recipe.name == "chameleon_l1.yaml"  # its system_args come partly from base/bench_l1
    assert entries["vila_u"].dependencies[0].run == "vila_u_tower_l1"
    assert entries["vqvideo"].recipe.name == "vqvideo_l1.yaml"
    assert entries["fsq"].recipe is None  # no fsq_l1 recipe: reported, not trained
    assert entries["fsq"].looked_for.name == "fsq_l1.yaml"  # and the report names the level's recipe


def test_the_survey_table_claims_read_both_jobs():
    def row(system, geneval, shape, colour):
        return {"system": system, "status": "ok",
                "metrics": {"geneval/overall": geneval, "caption/shape": shape, "caption/colour": colour}}

    rows = [row("chameleon", 0.5, 1.0, 1.0), row("transfusion", 0.9, 0.9, 1.0), row("textbind", 0.05, 0.8, 0.9)]
    claims = {c.statement.split()[0] + " " + c.statement.split()[1]: c for c in evaluate_claims(rows, [], 90)}
    assert claims["AR is"].verdict == "supported"  # captions 1.00 vs 0.95, images 0.5 vs 0.9
    assert claims["Single models"].verdict == "supported"  # balance ~0.7 vs 0.06
    rows[0] = row("chameleon", 0.95, 0.2, 0.2)  # AR now better on images and worse on captions
    claims = {c.statement.split()[0] + " " + c.statement.split()[1]: c for c in evaluate_claims(rows, [], 90)}
    assert claims["AR is"].verdict == "not supported"


def test_the_token_and_image_claim_reads_each_half_against_its_spread():
    """L3's figures: AR captions 0.651 vs 0.694 (within two standard errors over 60 captions: the text half holds),
    images 0.19 vs 0.27 with bootstrap intervals that overlap: not established, so the verdict is mixed."""
    def row(system, geneval, low, high, caption):
        return {"system": system, "status": "ok", "metrics": {
            "geneval/overall": geneval, "geneval/overall_ci_low": low, "geneval/overall_ci_high": high,
            "caption/shape": caption, "caption/colour": caption}}

    rows = [row("chameleon", 0.167, 0.09, 0.25, 0.37), row("mmar", 0.211, 0.13, 0.30, 0.933),
            row("showo", 0.122, 0.06, 0.20, 0.472), row("transfusion", 0.422, 0.32, 0.52, 0.916)]
    claim = next(c for c in evaluate_claims(rows, [], 90, 60) if c.statement.startswith("AR is"))
    assert claim.verdict == "mixed" and "the text half holds" in claim.evidence
    # AR+diffusion's interval wholly above AR's: the image half holds too
    rows[2] = row("showo", 0.80, 0.72, 0.88, 0.472)
    rows[3] = row("transfusion", 0.85, 0.77, 0.92, 0.916)
    assert next(c for c in evaluate_claims(rows, [], 90, 60) if c.statement.startswith("AR is")).verdict == "supported"
    # AR's captions far worse (more than two standard errors): the text half fails
    rows[0], rows[1] = row("chameleon", 0.167, 0.09, 0.25, 0.2), row("mmar", 0.211, 0.13, 0.30, 0.3)
    claim = next(c for c in evaluate_claims(rows, [], 90, 60) if c.statement.startswith("AR is"))
    assert claim.verdict == "mixed" and "AR's captions are worse" in claim.evidence


def test_a_job_the_system_never_trained_is_unmeasured_not_zero():
    """The L1 recipes train text-to-image only: their QA score of 0 must not decide the multi-expert claim."""
    rows = [{"system": "chameleon", "status": "ok", "tasks": ["t2i"], "metrics": {"qa/colour": 0.0, "geneval/overall": 0.5}},
            {"system": "imagebind", "status": "ok", "tasks": ["image_text"],
             "metrics": {"zeroshot/image/colour/mean_centre": 1.0}}]
    claim = next(c for c in evaluate_claims(rows, [], 90) if c.statement.startswith("Multi-expert models are optimised"))
    assert claim.verdict == "mixed" and "none measured" in claim.evidence
    rows[0]["tasks"] = ["t2i", "qa"]  # trained: its 0 now counts
    claim = next(c for c in evaluate_claims(rows, [], 90) if c.statement.startswith("Multi-expert models are optimised"))
    assert claim.verdict == "supported"


def test_the_runner_records_what_a_recipe_trains():
    from umm.bench.runner import trained_tasks
    from umm.recipes import RECIPES_DIR

    assert trained_tasks(RECIPES_DIR / "chameleon_l1.yaml") == ["t2i", "caption", "qa"]  # inherited from base/bench_l1
    assert trained_tasks(RECIPES_DIR / "test_transfusion_guard.yaml") == ["t2i"]
    assert trained_tasks(RECIPES_DIR / "chameleon_s.yaml") == ["t2i", "caption", "qa"]


def test_a_bench_level_dependency_on_a_survey_system_is_that_systems_entry(tmp_path):
    """At L1 TextBind reads runs/imagebind_l1/model and runs/cond_decoder_l1/model: the bench trains the imagebind
    entry once (not a second copy named imagebind_l1), then the decoder, then TextBind, and points each at it."""
    from umm.bench.plan import plan
    from umm.bench.runner import BenchConfig, dependency_model
    from umm.recipes import RECIPES_DIR

    entries = plan(["textbind", "imagebind", "cond_decoder"], RECIPES_DIR, quick=False, level="L1")
    names = [e.name for e in entries]
    assert names == ["imagebind", "cond_decoder", "textbind"], names  # each family once, dependencies first
    assert entries[1].recipe.name == "cond_decoder_l1.yaml" and entries[1].cell == "decoder"
    config = BenchConfig(Path("/tmp/b"), level="L1")
    textbind = entries[-1]
    models = {d.key: dependency_model(d, config, RECIPES_DIR) for d in textbind.dependencies}
    assert models["system_args.encoders"] == Path("/tmp/b/imagebind/run/model")
    assert models["system_args.generator"] == Path("/tmp/b/cond_decoder/run/model")
    # a decoder trained before under its own recipe stands in for the bench's (as tokenizers do)
    config = BenchConfig(Path("/tmp/b"), level="L1", reuse_from=tmp_path)
    (tmp_path / "cond_decoder_l1" / "model").mkdir(parents=True)
    (tmp_path / "cond_decoder_l1" / "model" / "config.json").write_text("{}")
    models = {d.key: dependency_model(d, config, RECIPES_DIR) for d in textbind.dependencies}
    assert models["system_args.generator"] == tmp_path / "cond_decoder_l1" / "model"
    assert models["system_args.encoders"] == Path("/tmp/b/imagebind/run/model"), "a survey system is never reused"


def test_a_bench_level_lists_the_tokenizers_it_has_recipes_for():
    from umm.recipes import RECIPES_DIR

    systems = default_systems(SYSTEMS.names(), RECIPES_DIR, "L1")
    assert {"vq", "vae", "cond_decoder"} <= set(systems) and "fsq" not in systems and "emu3" in systems


def test_emergent_alignment_is_judged_against_chance():
    """A binder whose never-paired pairs retrieve well above chance supports the claim; one at chance does not."""
    def row(system, emergent):
        metrics = {"retrieval/emergent/mean_R@1": emergent, "retrieval/paired/mean_R@1": 0.5,
                   "retrieval/chance/R@1": 1 / 60}
        return {"system": system, "status": "ok", "metrics": metrics}

    def verdict(rows):
        return next(c for c in evaluate_claims(rows, [], 60) if c.statement.startswith("Binding every modality")).verdict

    assert verdict([row("imagebind", 0.40), row("unibind", 0.30)]) == "supported"
    assert verdict([row("imagebind", 0.02), row("unibind", 0.017)]) == "not supported"
    assert verdict([row("imagebind", 0.40), row("unibind", 0.02)]) == "mixed"
    assert verdict([]) == "mixed"


def test_extensibility_compares_minutes_to_place_the_new_modality():
    """The new audio expert's curve against the retrained model's: reaching the retrained model's final audio R@1
    in a quarter of its minutes supports the claim; never reaching it within the budget rejects it."""
    key = "retrieval/audio/mean_R@1"

    def row(system, curve, final, minutes=10.0):
        points = [{"cpu_minutes": m, "metrics": {key: v}} for m, v in curve]
        return {"system": system, "status": "ok", "seconds": minutes * 60, "curve": points, "metrics": {key: final}}

    def claim(rows):
        return next(c for c in evaluate_claims(rows, [], 60) if "easily extendable" in c.statement)

    retrain = row("imagebind", [(2.5, 0.1), (5.0, 0.3)], 0.5)
    quick = claim([retrain, row("imagebind_extend", [(2.5, 0.6), (5.0, 0.7)], 0.8)])
    assert quick.verdict == "supported" and quick.details["extend_minutes"] < 2.5 and quick.details["retrain_minutes"] == 10.0
    slow = claim([retrain, row("imagebind_extend", [(2.5, 0.1), (5.0, 0.2)], 0.3)])
    assert slow.verdict == "not supported" and slow.details["extend_minutes"] is None
    assert claim([retrain]).verdict == "mixed"


def test_inference_speed_is_compared_where_both_sides_draw_well_on_the_test_split():
    def row(system, test, heldout, seconds):
        return {"system": system, "status": "ok", "metrics": {"geneval_test/overall": test, "geneval/overall": heldout,
                                                               "seconds/t2i_per_image": seconds}}

    def claim(rows):
        return next(c for c in evaluate_claims(rows, [], 90) if c.statement.startswith("At equal quality"))

    # AR draws seen pairs as well (0.95) but composes unseen ones worse (0.47): the test split decides who is compared
    rows = [row("chameleon", 0.95, 0.47, 0.01), row("transfusion", 0.95, 0.92, 0.04), row("mmar", 0.43, 0.41, 0.001)]
    result = claim(rows)
    assert result.verdict == "not supported" and set(result.details["ar"]) == {"chameleon"}  # mmar is below 0.8
    assert claim([row("chameleon", 0.95, 0.47, 0.08), row("transfusion", 0.95, 0.92, 0.04)]).verdict == "supported"
    assert claim([row("chameleon", 0.5, 0.4, 0.01), row("transfusion", 0.95, 0.92, 0.04)]).verdict == "mixed"


def test_an_extension_recipe_depends_on_the_system_it_extends():
    from umm.recipes import RECIPES_DIR

    entries = plan(["imagebind_extend"], RECIPES_DIR, quick=False, level="L1")
    assert [e.name for e in entries] == ["imagebind", "imagebind_extend"]
    assert entries[1].dependencies[0].key == "train.init_from"
    assert "imagebind_extend" in default_systems(SYSTEMS.names(), RECIPES_DIR, "L1")
    assert "imagebind_extend" not in default_systems(SYSTEMS.names(), RECIPES_DIR, "L3")


def test_the_systems_table_shows_both_splits_and_skips_an_attribute_the_level_never_names():
    """At L1 the caption's cell is never named (caption/position is NaN): the caption cell is the mean of the
    attributes that were scored, not '–'; GenEval, captions and QA read test / held-out."""
    from umm.bench.report import _headline

    metrics = {"geneval/overall": 0.5, "geneval_test/overall": 0.9, "qa/accuracy": 0.8, "qa_test/accuracy": 1.0,
               "caption/shape": 0.5, "caption/colour": 1.0, "caption/size": 1.0, "caption/position": float("nan"),
               "caption_test/shape": 1.0, "caption_test/colour": 1.0, "caption_test/size": 1.0,
               "caption_test/position": float("nan")}
    cells = _headline({"system": "chameleon", "metrics": metrics})
    assert cells["GenEval test / held-out"] == "0.900 / 0.500"
    assert cells["caption attr. test / held-out"] == "1.000 / 0.833"
    assert cells["QA test / held-out"] == "1.000 / 0.800"
    assert _headline({"system": "vq", "metrics": {"recon/mse": 0.01}})["GenEval test / held-out"] == "–"
    video = {"t2v/direction_accuracy": 0.25, "v2t/direction_accuracy": 0.75}
    assert _headline({"system": "emu3", "metrics": video})["video dir."] == "0.250 / 0.750"
    both = {**video, "t2v_test/direction_accuracy": 0.5, "v2t_test/direction_accuracy": 1.0}
    assert _headline({"system": "lwm", "metrics": both})["video dir."] == "0.500 / 1.000"  # the test split's
    assert _headline({"system": "vqvideo", "metrics": {"recon/direction_accuracy": 0.35}})["video dir."] == "0.350"
    recon = {"recon/direction_accuracy": 0.0, "recon_test/direction_accuracy": 1.0}  # held-out pairs never seen
    assert _headline({"system": "vqvideo", "metrics": recon})["video dir."] == "1.000 / 0.000"
    binder = {"retrieval/paired/mean_R@1": 1.0, "retrieval/emergent/mean_R@1": 0.48,
              "retrieval_test/paired/mean_R@1": 0.95, "retrieval_test/emergent/mean_R@1": 0.6}
    cells = _headline({"system": "imagebind", "metrics": binder})
    assert (cells["R@1 paired test / held-out"], cells["R@1 emergent test / held-out"]) == ("0.950 / 1.000", "0.600 / 0.480")


def test_the_bench_names_unknown_systems_and_the_claim_runs_in_one_error_line(capsys):
    from umm.cli import main

    assert main(["bench", "--level", "L1", "--systems", "nonesuch", "--out", "/tmp/umm-bench-unknown"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("umm: error: unknown system(s) nonesuch")
    assert "claim runs: imagebind_extend" in err[0]


def test_the_pool_starts_the_longest_chain_first():
    """Critical-path order: ImageBind heads the longest chain at L1 (its decoder, then the bridges), so it starts
    before the tokenizers that fewer rows wait for; a short claim run and the latency sweep fill in late."""
    from umm.bench.runner import BenchConfig, critical_paths, latency_job
    from umm.recipes import RECIPES_DIR

    entries = plan(["chameleon", "textbind", "unibind", "imagebind_extend"], RECIPES_DIR, quick=False, level="L1")
    config = BenchConfig(Path("/tmp/unused"), budget_minutes=10, level="L1")
    chains = critical_paths(entries, config)
    # a row's budget and a minute of scoring, plus its slowest dependent's chain (not the 5-minute claim run's)
    assert chains == {"vq": 22.0, "chameleon": 11.0, "imagebind": 33.0, "cond_decoder": 22.0, "textbind": 11.0,
                      "unibind": 11.0, "imagebind_extend": 6.0}
    assert latency_job(config).minutes < chains["imagebind_extend"]
    # quick mode: every row the same length, so ready rows start in plan order
    quick = plan(["chameleon", "transfusion", "vq"], RECIPES_DIR, quick=True)
    assert set(critical_paths(quick, BenchConfig(Path("/tmp/unused"), quick_steps=3)).values()) == {1.0}


def test_survey_systems_train_the_bench_budget_and_the_others_their_recipes_capped_at_it(tmp_path):
    """The bench budget is every survey system's; a tokenizer keeps its recipe's steps (capped at the budget) and a
    claim run its recipe's own, shorter budget."""
    from umm.bench.plan import plan
    from umm.bench.runner import BenchConfig, train_command
    from umm.recipes import RECIPES_DIR

    config = BenchConfig(tmp_path, budget_minutes=10)
    entries = {entry.name: entry for entry in plan(["chameleon", "imagebind_extend"], RECIPES_DIR, quick=False, level="L1")}
    assert list(entries) == ["vq", "chameleon", "imagebind", "imagebind_extend"]
    commands = {name: " ".join(train_command(e, config, tmp_path / name)) for name, e in entries.items()}
    assert "train.time_budget_minutes=10" in commands["chameleon"] and "train.steps=1000000" in commands["chameleon"]
    assert "train.time_budget_minutes=10" in commands["vq"] and "train.steps=" not in commands["vq"]
    assert "train.time_budget_minutes=5" in commands["imagebind_extend"]
    assert all("train.budget_clock=process" in c for c in commands.values())
    assert "train.time_budget_minutes=3" in " ".join(train_command(entries["imagebind_extend"], BenchConfig(tmp_path, 3), tmp_path))
