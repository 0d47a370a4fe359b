"""`mmrun report` on a real tiny captioning run: plots with the expected curves, a self-contained
page with the sample images and captions, and the run states a report meets in practice
(killed mid-write, still going, images moved, several runs compared)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from report_helpers import MAX_EPOCH, Page, decode_data_url, env, events, mmrun

pytestmark = pytest.mark.slow  # real runs / several processes: `make test-fast` skips this module

EXTERNAL = re.compile(r"https?:|//[\w.-]+\.\w|(?:src|href)\s*=\s*[\"'](?!data:|#)", re.IGNORECASE)


def _manifest(html: Path) -> dict[str, dict]:
    data = json.loads((html.parent / f"{html.stem}_plots" / "plots.json").read_text())
    return {entry["file"]: entry for entry in data}


def _curves(entry: dict) -> dict[str, dict]:
    return {c["label"]: c for c in entry["curves"]}


def _eval_metrics(evs: list[dict]) -> set[str]:
    """The numeric evaluation metrics logged, worked out from the events (not by the report)."""
    skip = {"type", "split", "step", "epoch", "wall_time", "time", "num_images"}
    return {k for e in evs if e["type"] == "eval" for k, v in e.items()
            if k not in skip and isinstance(v, (int, float))}


def test_report_of_a_tiny_captioning_run(caption_run, tmp_path):
    run, cache = caption_run["run"], caption_run["cache"]
    html = tmp_path / "page" / "report.html"
    done = mmrun(["report", str(run), "--out", str(html), "--gallery", "3"], env(cache))
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"report: {html}" in done.stdout

    evs = events(run)
    train = [e for e in evs if e["type"] == "train"]
    val = [e for e in evs if e["type"] == "eval" and e["split"] == "val"]
    assert len(val) == MAX_EPOCH and [e["split"] for e in evs if e["type"] == "eval"][-1] == "test"

    # --- the PNGs: one per figure, each opens with Pillow, with the curves the log holds
    manifest = _manifest(html)
    pngs = sorted(p.name for p in (html.parent / "report_plots").glob("*.png"))
    metrics = _eval_metrics(evs)
    assert pngs == sorted(["loss.png", "lr.png", "samples_per_sec.png", *(f"eval_{m}.png" for m in metrics)])
    assert sorted(manifest) == pngs
    for name in pngs:
        with Image.open(html.parent / "report_plots" / name) as image:
            image.verify()
        with Image.open(html.parent / "report_plots" / name) as image:
            assert image.format == "PNG" and image.size == (700, 360)
    loss = _curves(manifest["loss.png"])
    assert set(loss) == {"loss", "loss_colour", "loss_count"}  # the total and the model's two terms
    for key, curve in loss.items():
        assert curve["points"] == len(train)
        assert curve["last"] == [train[-1]["step"], pytest.approx(train[-1][key])]
        assert curve["min"] == pytest.approx(min(e[key] for e in train))
    assert len(manifest["lr.png"]["curves"]) == 1 and manifest["lr.png"]["curves"][0]["points"] == len(train)
    assert manifest["lr.png"]["curves"][0]["max"] == pytest.approx(max(e["lr"] for e in train))
    assert len(manifest["samples_per_sec.png"]["curves"]) == 1
    cider = _curves(manifest["eval_CIDEr.png"])
    assert set(cider) == {"val", "test"}
    assert cider["val"]["points"] == MAX_EPOCH and cider["val"]["last"][1] == pytest.approx(val[-1]["CIDEr"])
    assert cider["test"]["points"] == 1

    # --- the page: parses, embeds everything, references nothing outside itself
    text = html.read_text()
    page = Page(text)
    assert not EXTERNAL.search(text), EXTERNAL.search(text)
    assert not [t for t, _ in page.tags if t in ("script", "link", "iframe", "object", "embed")]
    sources = [a["src"] for t, a in page.tags if t == "img"]
    assert sources and all(s.startswith("data:image/") for s in sources)
    assert sum(s.startswith("data:image/png") for s in sources) >= len(pngs)

    # --- the gallery: latest val results, 3 best and 3 worst by the task's per-image CIDEr
    saved = {str(r["image_id"]): r["caption"] for r in json.loads((run / "result" / f"val_epoch{MAX_EPOCH - 1}.json").read_text())}
    per_image = json.loads((run / "result" / f"val_epoch{MAX_EPOCH - 1}_scores.json").read_text())["per_image"]["CIDEr"]
    ranked = sorted(per_image, key=lambda k: per_image[k], reverse=True)
    refs = {str(int(Path(r["image"]).stem.split("_")[-1])): r["caption"]
            for r in json.loads((cache / "shapes" / "annotations" / "karpathy_val.json").read_text())}
    val_cards = [c for c in page.cards if c["id"] in saved][:6]
    assert [per_image[c["id"]] for c in val_cards[:3]] == sorted((per_image[k] for k in ranked[:3]), reverse=True)
    assert sorted(per_image[c["id"]] for c in val_cards[3:]) == sorted(per_image[k] for k in ranked[-3:])
    for card in val_cards:
        assert saved[card["id"]] in card["text"]  # the generated caption ...
        assert all(ref in card["text"] for ref in refs[card["id"]])  # ... and every reference
        shown = decode_data_url(card["img"]).convert("RGB")  # ... next to its own image
        original = Image.open(cache / "shapes" / "images" / "val" / f"shapes_{int(card['id']):06d}.png").convert("RGB")
        assert shown.size == original.size and shown.tobytes() == original.tobytes()
    assert "★ best" in page.text or "\u2605 best" in page.text


def test_best_checkpoint_row_is_marked(caption_run, tmp_path):
    from mm_report import write_report

    run = caption_run["run"]
    best_tag = (run / "checkpoints" / "best").read_text().strip()
    best_step = json.loads((run / "checkpoints" / best_tag / "meta.json").read_text())["step"]
    report = write_report([run], out=tmp_path / "r.html", gallery_size=2, plots=False)
    rows = re.findall(r"<tr( class=best)?><td>(\w+)</td><td>(\w+)</td><td>(\d+)</td>", report.html.read_text())
    marked = [(split, int(step)) for best, split, _, step in rows if best]
    assert marked == [("val", best_step)]


def test_truncated_last_line_is_skipped_with_a_note(run_copy, caption_run, tmp_path, monkeypatch):
    from mm_report import write_report

    monkeypatch.setenv("MM_CACHE_ROOT", str(caption_run["cache"]))
    metrics = run_copy / "metrics.jsonl"
    content = metrics.read_text()
    last_start = content.rstrip("\n").rfind("\n") + 1
    metrics.write_text(content[: last_start + 40])  # killed while writing the final (test) event
    report = write_report([run_copy], out=tmp_path / "r.html")
    assert any("last line" in n and "incomplete" in n for n in report.notes)
    assert "incomplete" in Page(report.html.read_text()).text
    cider = _curves(_manifest(report.html)["eval_CIDEr.png"])
    assert set(cider) == {"val"}  # the cut test event is gone, the rest is there
    assert cider["val"]["points"] == MAX_EPOCH


def test_a_run_still_going(run_copy, caption_run, tmp_path, monkeypatch):
    """Mid-run: no best pointer yet, a result file caught mid-write, metrics up to epoch 1."""
    from mm_report import write_report

    monkeypatch.setenv("MM_CACHE_ROOT", str(caption_run["cache"]))
    evs = events(run_copy)
    cut = next(i for i, e in enumerate(evs) if e["type"] == "eval" and e["epoch"] == 1)
    (run_copy / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in evs[: cut + 1]))
    (run_copy / "checkpoints" / "best").unlink()
    for path in (run_copy / "result").glob("test_*"):
        path.unlink()
    for path in (run_copy / "result").glob("val_epoch2*"):
        path.unlink()
    partial = run_copy / "result" / "val_epoch1.json"
    partial.write_text(partial.read_text()[:30])
    report = write_report([run_copy], out=tmp_path / "r.html")
    assert any("val_epoch1.json" in n for n in report.notes)
    # epoch 1's results are half written: the gallery shows epoch 0's
    assert [(g.split, g.epoch) for g in report.galleries] == [("val", "0")]
    assert "best agg_metrics so far" in report.html.read_text()
    assert _curves(_manifest(report.html)["eval_CIDEr.png"])["val"]["points"] == 2


def _records_moved_away(run: Path, gone: Path) -> None:
    """Make a run's results name an images root that no longer exists (the data moved)."""
    for path in (run / "result").glob("*_epoch*.json"):
        records = json.loads(path.read_text())
        if isinstance(records, list):
            path.write_text(json.dumps([{**r, "images_root": str(gone)} if "images_root" in r else r for r in records]))


def test_moved_images_are_noted_and_found_with_images_root(run_copy, caption_run, tmp_path):
    from mm_report import write_report

    _records_moved_away(run_copy, tmp_path / "gone")
    report = write_report([run_copy], out=tmp_path / "a" / "r.html", gallery_size=2, plots=False)
    assert any("may have moved" in n for n in report.notes)
    page = Page(report.html.read_text())
    assert page.cards and all(card["img"] is None for card in page.cards)
    assert "not found at" in page.text and "--images-root" in page.text
    assert all(ref in page.text for ref in ("a picture of",))  # references still come from the results

    report = write_report([run_copy], out=tmp_path / "b" / "r.html", gallery_size=2, plots=False,
                          images_root=caption_run["cache"] / "shapes" / "images")
    page = Page(report.html.read_text())
    assert not any("may have moved" in n or "not found" in n for n in report.notes)
    assert page.cards and all(card["img"].startswith("data:image/") for card in page.cards)


def test_several_runs_are_overlaid(caption_run, tmp_path, monkeypatch):
    from mm_report import write_report

    monkeypatch.setenv("MM_CACHE_ROOT", str(caption_run["cache"]))
    second = Path(shutil.copytree(caption_run["run"], tmp_path / "second"))
    evs = events(second)  # the second run stopped early: only its first 10 steps
    (second / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in evs
                                                  if e["type"] == "train" and e["step"] <= 10))
    report = write_report([caption_run["run"], second], out=tmp_path / "cmp" / "r.html", gallery_size=2)
    manifest = _manifest(report.html)
    loss = _curves(manifest["loss.png"])
    assert set(loss) == {f"{run}: {key}" for run in ("out", "second") for key in ("loss", "loss_colour", "loss_count")}
    assert loss["second: loss"]["points"] == 10 and loss["out: loss"]["points"] == 6 * MAX_EPOCH
    assert set(_curves(manifest["lr.png"])) == {"out", "second"}
    assert set(_curves(manifest["eval_CIDEr.png"])) == {"out: val", "out: test"}
    assert {g.run for g in report.galleries} == {"out", "second"}


def test_gallery_is_ranked_by_the_scores_the_task_saved(run_copy, tmp_path):
    """The captioning task saves each image's CIDEr in its record (the same values as its
    scores file); the report ranks by them and computes nothing (the scores file is not read)."""
    from mm_report import write_report

    scores_file = run_copy / "result" / f"val_epoch{MAX_EPOCH - 1}_scores.json"
    expected = json.loads(scores_file.read_text())["per_image"]["CIDEr"]
    for path in (run_copy / "result").glob("*_scores.json"):
        path.unlink()
    report = write_report([run_copy], out=tmp_path / "r.html", gallery_size=2, plots=False)
    val = next(g for g in report.galleries if g.split == "val")
    assert val.metric == "CIDEr" and "saved with the results" in val.score_source
    shown = val.best + val.worst
    assert len(shown) == 4
    for sample in shown:
        assert sample.score == pytest.approx(expected[sample.key], abs=1e-9)
    assert [s.score for s in val.best] == sorted((s.score for s in val.best), reverse=True)
    assert min(s.score for s in val.best) >= max(s.score for s in val.worst)


def test_report_of_another_plugins_task_and_dataset(squares_run, tmp_path):
    """A run with neither COCO's dataset nor its tasks: the gallery shows the images, prompts,
    references and scores its task saved, ranked by them."""
    run = squares_run["run"]
    html = tmp_path / "squares.html"
    done = mmrun(["report", str(run), "--out", str(html), "--gallery", "2", "--no-plots"], env(squares_run["cache"]))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "not found" not in done.stdout and "may have moved" not in done.stdout
    saved = {r["sample_id"]: r for r in json.loads((run / "result" / "val_epoch0.json").read_text())}
    page = Page(html.read_text())
    assert len(page.cards) == 4 and {c["id"] for c in page.cards} <= set(saved)
    assert "Ranked by word overlap per sample" in page.text
    for card in page.cards:
        record = saved[card["id"]]
        for text in (record["prompt"], record["prediction"], *record["references"]):
            assert text in card["text"]
        assert f"{record['score']:.3f}" in card["text"]
        shown = decode_data_url(card["img"]).convert("RGB")
        original = Image.open(squares_run["cache"] / "report_squares" / "pictures" / record["image"]).convert("RGB")
        assert shown.size == original.size and shown.tobytes() == original.tobytes()


def test_images_root_option_of_the_command(squares_run, tmp_path):
    """``mmrun report --images-root DIR`` finds images that moved since the run; without it,
    one note per gallery says they are missing and how to point at them."""
    run = Path(shutil.copytree(squares_run["run"], tmp_path / "run"))
    moved = Path(shutil.copytree(squares_run["cache"] / "report_squares" / "pictures", tmp_path / "moved"))
    _records_moved_away(run, tmp_path / "gone")
    environ = env(tmp_path / "empty-cache")

    lost = mmrun(["report", str(run), "--out", str(tmp_path / "lost.html"), "--no-plots"], environ)
    assert lost.returncode == 0, lost.stderr[-3000:]
    notes = [line for line in lost.stdout.splitlines() if line.startswith("note:")]
    assert len([n for n in notes if "may have moved" in n]) == 1 and "--images-root" in lost.stdout
    assert all(card["img"] is None for card in Page((tmp_path / "lost.html").read_text()).cards)

    found = mmrun(["report", str(run), "--out", str(tmp_path / "found.html"), "--no-plots",
                   "--images-root", str(moved)], environ)
    assert found.returncode == 0, found.stderr[-3000:]
    assert "not found" not in found.stdout and "may have moved" not in found.stdout
    cards = Page((tmp_path / "found.html").read_text()).cards
    assert cards and all(card["img"].startswith("data:image/") for card in cards)


def test_listing_does_not_import_the_report():
    code = ("import sys; from mm_core.cli.main import main; main(['list']); "
            "assert 'mm_report.hooks' in sys.modules; "  # the plugin is loaded, its report is not
            "assert not [m for m in sys.modules if m.startswith(('mm_report.', 'matplotlib', 'PIL')) "
            "and m != 'mm_report.hooks']")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
