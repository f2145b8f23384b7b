"""The README's results table, generated from ``bench/results/*.json`` (never typed by hand).

Each row names the benchmark file it comes from; a row whose file or figure is missing is left out.
The table sits between the markers ``<!-- results:start -->`` and ``<!-- results:end -->``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from bench.common import RESULTS_DIR

README = Path(__file__).resolve().parents[1] / "README.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"
Row = tuple[str, str, str]  # (what, ours, baseline or target); the table adds the source file


def load(name: str) -> dict[str, Any] | None:
    path = RESULTS_DIR / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def reconstruct_rows(r: dict) -> list[Row]:
    p = r["parts"]
    rows = []
    if "cpu" in p:
        c = p["cpu"]
        rows.append(("Stage 1, `cpu` preset, fern_504, every 8th view held out",
                     f"held-out PSNR {c['held_out_psnr']:.2f} dB, SSIM {c['held_out_ssim']:.3f}, "
                     f"{c['total_seconds'] / 60:.1f} min, {c['seconds_per_iteration']:.2f} s/iter, "
                     f"peak RSS {c['peak_rss_gb']:.2f} GB", "target >= 22 dB within 15 min"))
        if "fine_grid" in c:
            f = c["fine_grid"]
            grid = f"{round(f['preset']['n_voxel_final'] ** (1 / 3))}^3"
            rows.append((f"Stage 1, `cpu` preset with a {grid} final grid at the same samples per ray, fern_504, every 8th "
                         "view held out", f"held-out PSNR {f['held_out_psnr']:.2f} dB, SSIM {f['held_out_ssim']:.3f}, "
                         f"{f['total_seconds'] / 60:.1f} min, {f['seconds_per_iteration']:.2f} s/iter, peak RSS "
                         f"{f['peak_rss_gb']:.2f} GB", f"`cpu` preset {c['held_out_psnr']:.2f} dB, "
                         f"{c['total_seconds'] / 60:.1f} min (same run)"))
        if "ten_minutes" in c:
            b = c["ten_minutes"]
            grid = f"{round(b['preset']['n_voxel_final'] ** (1 / 3))}^3"
            rows.append((f"Stage 1, the {grid} setting's schedule stretched to fill 10 minutes here, fern_504, every 8th "
                         f"view held out: `ovs3d reconstruct {' '.join(b['flags'])}`",
                         f"held-out PSNR {b['held_out_psnr']:.2f} dB, SSIM {b['held_out_ssim']:.3f}, {b['iterations']} iters "
                         f"(stretch {b['stretch']:.2f}), {b['total_seconds'] / 60:.1f} min",
                         "target >= 23.5 dB after 10 minutes on 2 cores"))
    if "naive" in p:
        n = p["naive"]
        rows.append(("Stage 1 renderer vs evaluate-every-sample, after the alpha mask",
                     f"{n['ours_seconds_per_iteration']:.2f} s/iter", f"naive {n['naive_seconds_per_iteration']:.2f} s/iter "
                     f"({n['speedup']:.1f}x; target >= 3x)"))
    if "small" in p:
        s = p["small"]
        rows.append(("Stage 1, authors' \"small\" setting (batch 1024, 64^3 -> 128^3, 600 iters)",
                     f"{s['seconds_per_iteration']:.3f} s/iter, peak RSS {s['peak_rss_gb']:.2f} GB"
                     + (f"; held-out PSNR {s['held_out']['ours']['psnr']:.2f} dB ({s['ours_precision']} shading) vs "
                        f"{s['held_out']['fp32']['psnr']:.2f} dB fp32" if "held_out" in s else ""),
                     "authors 0.30-0.47 s/iter, 5.7 GB; target <= 0.15 s/iter, PSNR within 0.1 dB of fp32"))
    if "hotpath" in p:
        h = p["hotpath"]
        rows.append(("Stage 1 hot path vs the old one, same process (small setting's final grid 128^3)",
                     f"{h['ours_seconds_per_iteration']:.2f} s/iter ({h['ours_precision']} shading, fused Adam); "
                     f"shading MLP bf16/fp32 {h['shading_mlp_ratio_bf16_over_fp32']:.2f}x",
                     f"old {h['old_seconds_per_iteration']:.2f} s/iter ({h['ratio_ours_over_old']:.2f}x; shared CPU: the "
                     f"process ran {h['process_cpu_seconds'] / h['wall_seconds']:.2f} of its wall time)"))
    if "paper-final" in p:
        f = p["paper-final"]
        rows.append(("Stage 1 at the paper's final grid (640^3 voxels, batch 4096)",
                     f"{f['seconds_per_iteration']:.1f} s/iter", "authors 25 s/iter"))
    return rows


def extract_rows(r: dict) -> list[Row]:
    t, s, d = r["throughput"], r["storage"], r["dino"]
    paths = t["paths"]
    default = t["default_precision_here"]
    speeds = "; ".join(f"{p} {v['seconds_per_crop']:.2f} s (batch {v['batch_size']})" for p, v in paths.items())

    def worst(v: dict) -> str:
        g = v["guard_vs_fp32"]
        agreement = min(a["agreement"] for a in g["argmax_agreement"].values())
        return f"cosine >= {g['cosine_min']:.5f}, argmax {100 * agreement:.1f} %"

    guards = "; ".join(f"{p}: CLIP {worst(paths[p])}, DINO {worst(d[p])}" for p in paths if p != "fp32")
    simd = "/".join(r["machine"].get("cpu_simd", [])) or "?"
    bound = t.get("hardware_bound")
    bound_text = ("; bound by the cores' measured GEMM rate: " + ", ".join(
        f"{p} >= {bound[p]['min_seconds_per_crop']:.2f} s ({bound[p]['gemm_gflops']:.0f} GFLOP/s)" for p in ("fp32", "bf16"))
        if bound else "")
    return [("CLIP hierarchy extraction (random ViT-B/16), seconds per crop",
             f"{speeds}; default here {default} ({simd}; 1-min load average {r['load_average_1min_at_start']:.1f} on "
             f"{r['machine']['cpu_cores']} cores: compare within the row){bound_text}",
             f"one crop at a time {t['one_crop_at_a_time_pil_fp32']['seconds_per_crop']:.2f} s; authors 0.32 s; "
             f"target 0.08 s (on a CPU with bf16)"),
            ("Extraction fast paths against fp32 (random ViT-B/16 CLIP and ViT-B/8 DINO)",
             f"{guards}; default here: CLIP {default}, DINO {d['default_precision_here']}",
             "cosine >= 0.998, argmax agreement >= 99 % for paths on by default"),
            ("Feature cache on disk per view (fern, 504x378)",
             f"{s['bytes_per_view']['ours_fp16_store_stride_2'] / 1e6:.0f} MB",
             f"float32 torch.save {s['bytes_per_view']['authors_float32_torch_save'] / 1e6:.0f} MB "
             f"({s['disk_ratio_float32_over_ours']:.1f}x)"),
            ("Loading all 20 views' features for training",
             f"{s['load_all_views_seconds']['ours_read_fully_into_ram_measured']:.1f} s read fully",
             f"float32 torch.load {s['load_all_views_seconds']['authors_all_views_extrapolated']:.0f} s "
             f"({s['load_speedup_read_fully']:.1f}x)")]


def builtin_rows(r: dict) -> list[Row]:
    return [(f"Built-in encoders, 2D argmax on the synthetic scene ({name})",
             f"accuracy {s['accuracy']:.3f}, mIoU {s['miou']:.3f}", "2D teacher only (no 3D)")
            for name, s in r["scenes"].items()]


def demo_rows(r: dict) -> list[Row]:
    rule = r.get("label_rule", "cosine")
    results = {rule: r["result_3d"]["3dovs"],
               **{k[len("3dovs_"):].replace("_labels", ""): v for k, v in r["result_3d"].items() if k.startswith("3dovs_")}}
    ours = "; ".join(f"{name} labels {v['miou']:.3f} / {v['accuracy']:.3f}" for name, v in sorted(results.items()))
    teachers = " / ".join(f"{t['miou']:.3f} ({name.replace('teacher_2d', 'cosine').replace('cosine_', '')})"
                          for name, t in r["teachers_2d"].items())
    return [("`ovs3d demo` (built-in encoders), wall clock", f"{r['wall_seconds']:.0f} s",
             f"target < {r['target_seconds']} s"),
            ("Synthetic scene, 3D-OVS protocol (mIoU / accuracy, 4 annotated views)",
             f"3D: {ours}", f"2D teacher mIoU {teachers}; target 3D >= 0.85")]


def modes_rows(r: dict) -> list[Row]:
    rows = []
    for iterations in sorted({m["iterations"] for m in r["modes"]}):
        runs = {m["mode"]: m for m in r["modes"] if m["iterations"] == iterations}
        cell = lambda m: f"{m['cosine_labels']['miou']:.3f} / {m['relevancy_labels']['miou']:.3f}"  # noqa: E731
        rows.append((f"Synthetic scene, stage 2 `improved` vs `faithful` mode, {iterations} iterations, 3D mIoU "
                     f"(cosine / relevancy labels)", f"improved {cell(runs['improved'])}",
                     f"faithful {cell(runs['faithful'])}"))
    return rows


def segment_rows(r: dict) -> list[Row]:
    rows = []
    if "pairwise" in r:
        p = r["pairwise"]
        rows.append(("FDA pairwise term, 8 crops x 1024 positions, forward + backward",
                     f"{p['chunked']['peak_rss_above_inputs_gb']:.2f} GB",
                     f"naive dense {p['dense']['peak_rss_above_inputs_gb']:.2f} GB "
                     f"({p['memory_ratio_dense_over_chunked']:.1f}x)"))
    for key, label in (("paper", "4096 rays + 8 patches"), ("paper_small", "1024 rays + 2 patches")):
        if key in r:
            p = r[key]
            rows.append((f"Stage 2 at the authors' batches ({label}), all views' features",
                         f"{p['s_per_iter_after_joint']:.1f} s/iter, peak RSS {p['peak_rss_gb']:.1f} GB "
                         f"({p['peak_anon_rss_gb']:.1f} GB anonymous)",
                         f"authors {p['authors']['s_per_iter'][0]}-{p['authors']['s_per_iter'][1]} s/iter, "
                         f"{p['authors']['peak_rss_gb']} GB"))
    return rows


def lifting_rows(r: dict) -> list[Row]:
    t, o = r["teacher_2d"], r["ours_3d"]
    return [("3D lifting on statue_504 with a degraded 2D teacher (mIoU, all 29 views)",
             f"ours 3D {o['miou_all']:.3f} (corrupted views {o['miou_corrupted_views']:.3f})",
             f"teacher 2D {t['miou_all']:.3f} (corrupted views {t['miou_corrupted_views']:.3f})")]


def instant_rows(r: dict) -> list[Row]:
    def pair(arm: dict) -> str:
        return f"{arm['relevancy']:.3f} / {arm['cosine']:.3f}"

    rows = []
    for a in r["arms"]:
        i, t, f = a["instant"], a["trained"], a["refined"]
        met = [name.replace("_", " ") for name, ok in a["targets"].items() if not ok]
        rows.append((f"Instant stage 2 (training-free lifting) vs trained (`cpu` preset), {a['arm']}, "
                     f"{r.get('threads', '?')} thread(s), 3D mIoU (relevancy / cosine labels)",
                     f"instant {pair(i)} in {i['seconds']:.1f} s ({100 * a['instant_time_fraction']:.1f} % of trained); "
                     f"refined from instant, {f['iterations']} iterations: {pair(f)} in {f['seconds']:.0f} s"
                     + (f" (same schedule from random init: {pair(a['short_random_init'])})"
                        if "short_random_init" in a else ""),
                     f"trained {t['iterations']} iterations {pair(t)} in {t['seconds']:.0f} s; 2D teacher "
                     f"{i['teacher_relevancy']:.3f} / {i['teacher_cosine']:.3f}; "
                     + ("every target met" if not met else f"missed: {', '.join(met)}")))
    return rows


def process_rows(r: dict) -> list[Row]:
    return [(f"process-data, {r['views']} views of bird_360, {name} mapper",
             f"{m['seconds_total']:.0f} s, {m['registered']}/{r['views']} registered",
             f"camera-centre error {m['centre_error_mean_over_spread']:.3f} of the spread")
            for name, m in r["mappers"].items()]


def compare_rows(r: dict) -> list[Row]:
    base = r["baseline_commit"][:7]
    rows = []
    benches = r["benches"]
    if "demo" in benches:
        cur, old = benches["demo"]["current"], benches["demo"]["baseline"]
        rows.append((f"Architecture step vs {base}, `bench.demo` (seeded)",
                     f"3D mIoU {cur['miou_cosine_labels']:.4f} / {cur['miou_relevancy_labels']:.4f} (cosine / relevancy), "
                     f"PSNR {cur['stage1_psnr']:.2f} dB, {cur['wall_seconds']:.0f} s",
                     f"{old['miou_cosine_labels']:.4f} / {old['miou_relevancy_labels']:.4f}, {old['stage1_psnr']:.2f} dB, "
                     f"{old['wall_seconds']:.0f} s"))
    for name, key, label in (("reconstruct", "s_per_iter", "`bench.reconstruct --part small`"),
                             ("segment", "paper_s_per_iter", "`bench.segment`, paper batches"),
                             ("segment", "paper_small_s_per_iter", "`bench.segment`, 1024 rays + 2 patches")):
        if name in benches:
            check = benches[name]["checks"][key]
            rows.append((f"Architecture step vs {base}, {label}", f"{benches[name]['current'][key]:.3f} s/iter",
                         f"{benches[name]['baseline'][key]:.3f} s/iter "
                         f"(ratio {check['ratio_current_over_baseline']:.3f}; target within 5 %)"))
    return rows


def authors_rows(r: dict) -> list[Row]:
    s1, s2 = r["import_stage1"], r["import_stage2"]
    printed = s2["their_printed"]
    rows = [("Authors' stage-1 checkpoint imported, our render vs their render (fixture views "
             f"{', '.join(str(v['view']) for v in s1['views'])})",
             f"PSNR >= {s1['min_psnr_vs_authors_render']:.1f} dB", "target >= 35 dB"),
            ("Authors' stage-2 checkpoint imported, our labels vs their test labels (4 annotated views)",
             f"agreement >= {100 * s2['min_agreement']:.2f} %, mIoU "
             f"{s2['ours_render_of_their_checkpoint']['cosine']['miou']:.4f} (cosine) / "
             f"{s2['ours_render_of_their_checkpoint']['relevancy']['miou']:.4f} (relevancy)",
             f"target >= 98 %; their test {printed['cosine']['miou']:.4f} / {printed['relevancy']['miou']:.4f}")]
    if "ours_on_their_stage1" in r:
        o = r["ours_on_their_stage1"]["summary"]
        teacher = r["ours_on_their_stage1"]["teacher_2d"]
        cell = lambda mode: f"{o[f'{mode}_cosine']['mean']:.3f} / {o[f'{mode}_relevancy']['mean']:.3f}"  # noqa: E731
        rows.append(("Same stage 1, features and schedule as the authors' stage 2 (their s2_synth), 3D mIoU "
                     "(cosine / relevancy labels)", f"ours faithful {cell('faithful')}; improved {cell('improved')}",
                     f"authors {printed['cosine']['miou']:.3f} / {printed['relevancy']['miou']:.3f}; 2D teacher "
                     f"{teacher['cosine']['miou']:.3f} / {teacher['relevancy']['miou']:.3f}"))
    return rows


def bad_input_rows(r: dict) -> list[Row]:
    t = r["totals"]
    return [(f"Bad inputs and faults, {t['cases']} cases through the CLI",
             f"{t['tracebacks']} tracebacks, {t['data_loss']} data loss, {t['path_escapes']} path escapes, "
             f"{t['slow_preflight_errors']} preflight errors over 10 s (slowest {t['max_preflight_seconds']:.1f} s), "
             f"{t['fail']} failing cases", "target 0 / 0 / 0 / 0")]


def export_rows(r: dict) -> list[Row]:
    s = r["summary"]
    seeds = ", ".join(str(seed) for seed in r["seeds"])
    rows = [(f"`ovs3d export` points vs the synthetic scene's analytic objects ({r['preset']} preset, seeds {seeds}; "
             "mean over the 5 objects, worst class in brackets)",
             f"precision {s['precision']['mean']:.3f} ({s['precision']['worst_class']:.3f}), recall "
             f"{s['recall']['mean']:.3f} ({s['recall']['worst_class']:.3f}), centroid "
             f"{100 * s['centroid_to_centre']['mean']:.1f} % of the extent ({100 * s['centroid_to_centre']['worst_class']:.1f} %)",
             "target precision >= 0.90, recall >= 0.80, centroid < 5 %")]
    timings = [(f"synthetic scene seed {row['seed']} ({row['preset']} preset)", row["export"]) for row in r["runs"][:1]]
    if "statue_504" in r:
        timings.append(("statue_504", r["statue_504"]["export"]))
    for name, t in timings:
        load = t.get("load_average_1_5_15")
        rows.append((f"`ovs3d export all` on the {name} run ({t['points']} points, {t['threads']} thread(s))",
                     f"{t['wall_seconds']:.0f} s wall, {t['cpu_seconds']:.0f} s CPU"
                     + (f" (load {load['start'][0]:.1f} at start)" if load else ""), "target < 60 s"))
    return rows


def scenes360_rows(r: dict) -> list[Row]:
    rows = []
    for key, a in r["arms"].items():
        scene, asked = key.split("/")
        if "failed" in a:
            rows.append((f"Stage 1, `cpu` preset, {scene}, space {asked}", f"failed ({a['failed']})", ""))
            continue
        if asked == "budget":
            what = (f"Stage 1, the `cpu` preset's schedule stretched to fill 20 minutes on the 256^3 grid, {scene} (360), "
                    f"every 8th view held out, {a['space']} space (flags `{' '.join(a['flags'])}`)")
            target = "target >= 24 dB within 20 min (the preset's arm above misses it)"
        else:
            what = (f"Stage 1, `cpu` preset, {scene} (360), every 8th view held out, {a['space']} space"
                    + (" (auto)" if asked == "auto" else " (forced)"))
            target = ("target >= 24 dB within 20 min, >= 4 dB above ndc" if asked == "auto"
                      else "the forward-facing space, for contrast")
        rows.append((what,
                     f"held-out PSNR {a['held_out_psnr']:.2f} dB, SSIM {a['held_out_ssim']:.3f}, "
                     f"{a['total_seconds'] / 60:.1f} min, {a['seconds_per_iteration']:.2f} s/iter, "
                     f"peak RSS {a['peak_rss_gb']:.2f} GB", target))
    return rows


def viewer_rows(r: dict) -> list[Row]:
    def cell(path: dict) -> str:
        return "; ".join(f"{mode} {path[mode]['first_frame_s']['median']:.2f} / {path[mode]['full_frame_s']['median']:.2f} s"
                         f" (CPU {path[mode]['full_frame_cpu_s']['median']:.2f} s)" for mode in ("rgb", "labels"))
    q = r["queries"]
    la = r["load_average_1_5_15"]
    load = f"{la['start'][0]:.1f} at start, {la['end'][0]:.1f} at end"
    versus = r.get("fast_vs_reference")
    how = (f"{versus['fast']['precision']} products, weight threshold {versus['fast']['weight_threshold']:g}"
           if versus else "fp32 products, weight threshold 0.0001")
    rows = []
    if versus:
        same = versus["labels_same_fraction"]
        rows.append((f"`ovs3d view` fast render ({how}) vs the reference render (fp32, 1e-4, what `test` renders), "
                     f"demo stage-2 run, {r['moves']} views",
                     f"labels equal on {100 * same['min']:.2f} % of the pixels (worst view), rgb PSNR "
                     f"{versus['rgb_psnr_db']['min']:.1f} dB (worst); full labels frame "
                     f"{versus['full_labels_frame_s']['fast']['median']:.2f} s vs "
                     f"{versus['full_labels_frame_s']['reference']['median']:.2f} s ({versus['speedup']:.2f}x)",
                     "labels >= 99.5 % equal"))
    for threads, t in r["by_threads"].items():
        size = t["renderer_path"]["rgb"]["full_size"]
        rows.append((f"`ovs3d view` ({how}), demo stage-2 run, camera move to first (preview) / full {size} frame, "
                     f"{threads} thread(s), machine load {load}",
                     f"renderer: {cell(t['renderer_path'])}; server thread + JPEG: {cell(t['server_path'])}",
                     "target first <= 0.3 s, full <= 2 s"))
    def ms(m: dict) -> str:
        return f"{m['median']:.2f} ms" + (f" (CPU {m['cpu_ms']['median']:.2f} ms)" if "cpu_ms" in m else "")
    rows.append((f"`ovs3d view`, a new query on a rendered {q['frame']} frame, machine load {load}",
                 f"{ms(q['new_query_ms'])} with {q['feature_dim']}-d built-in features; "
                 f"{ms(q['clip_sized_512d']['new_query_ms'])} with 512-d features in the head's span "
                 f"(all 512: {ms(q['clip_sized_512d']['without_basis_ms'])})",
                 "target <= 5 ms (LangSplatV2: 4.8 ms on an A100)"))
    return rows

def fda_rows(r: dict) -> list[Row]:
    def cell(arm: dict) -> str:
        return (f"mIoU {arm['relevancy']:.3f} / {arm['cosine']:.3f}, band IoU {arm['band_iou_relevancy']:.3f} / "
                f"{arm['band_iou_cosine']:.3f}")

    return [(f"FDA on vs off, demo seed {row['seed']}, same stage 1 (`cpu` preset stage 2; relevancy / cosine labels; "
             f"band = {r['band_px']} px around GT edges)",
             f"FDA with exact affinities: {cell(row['exact'])}; with the built-in DINO slot: {cell(row['builtin'])}",
             f"FDA off: {cell(row['off'])}; target: exact FDA band IoU above off") for row in r["seeds"]]


def quality_rows(r: dict) -> list[Row]:
    rows = []
    for size, s in r["by_size"].items():
        rows.append((f"Synthetic {r['layout']} scenes {size}, `ovs3d run --preset cpu` (built-in encoders), "
                     f"{s['arms']} seeds, 3D-OVS mIoU mean (min), relevancy / cosine labels",
                     f"{s['relevancy']['mean']:.3f} ({s['relevancy']['min']:.3f}) / {s['cosine']['mean']:.3f} "
                     f"({s['cosine']['min']:.3f}); above the teacher on every seed: "
                     f"{s['above_teacher_on_every_arm']['relevancy']} / {s['above_teacher_on_every_arm']['cosine']}",
                     f"2D teacher {s['teacher_relevancy']['mean']:.3f} / {s['teacher_cosine']['mean']:.3f}; "
                     f"target mean >= 0.85, min >= 0.80, above the teacher"))
    return rows


SOURCES: dict[str, Callable[[dict], list[Row]]] = {
    "reconstruct": reconstruct_rows, "extract": extract_rows, "extract_avx2": extract_rows, "builtin_features": builtin_rows,
    "demo": demo_rows, "demo_modes": modes_rows, "segment": segment_rows, "lifting": lifting_rows, "instant": instant_rows,
    "process_data": process_rows,
    "compare": compare_rows, "bad_inputs": bad_input_rows, "export": export_rows, "authors": authors_rows,
    "viewer": viewer_rows, "viewer_fp32": viewer_rows, "scenes360": scenes360_rows, "fda": fda_rows,
    "quality_forward": quality_rows, "quality_360": quality_rows}


def results_table() -> str:
    """Markdown table of every available figure, with the machine each file was measured on."""
    rows, machines = [], set()
    for name, make in SOURCES.items():
        data = load(name)
        if data is None:
            continue
        try:
            rows += [(*row, name) for row in make(data)]
        except (KeyError, TypeError, ZeroDivisionError):
            continue
        m = data.get("machine", {})
        machines.add(f"{m.get('cpu', '?')} ({m.get('cpu_cores', '?')} cores)" + (f", {m['gpu']}" if m.get("gpu") else ""))
    lines = ["| benchmark | ovs3d | baseline / target | `bench/results/` |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | `{d}.json` |" for a, b, c, d in rows]
    lines.append("")
    lines.append(f"Measured on: {'; '.join(sorted(machines)) or 'no results yet'}. Regenerate with `python -m bench all`.")
    return "\n".join(lines)


def update_readme(readme: Path = README) -> None:
    """Replace the table between the markers in the README (the markers must exist)."""
    text = readme.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"bench: {readme} lacks the {START} / {END} markers")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{START}\n{results_table()}\n{END}{tail}")
    print(f"bench: updated the results table in {readme}")


if __name__ == "__main__":
    update_readme()
