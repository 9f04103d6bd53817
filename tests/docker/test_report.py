"""The training report of a real run on the 3-breed photos, opened in headless Chromium."""

from __future__ import annotations

import json
import re

import numpy as np
from PIL import Image

from tests.browser import external_resources, rendered_images, visit

FIGURES = {"steps", "epochs", "confusion_valid", "confusion_test", "system", "step_split"}


def test_report_of_a_real_run_opens_offline_and_shows_that_run(trained_run, tmp_path):
    out = trained_run.opt_ml / "output" / "data"
    assert "report written to" in trained_run.log
    pngs = {p.stem: p for p in (out / "report_figures").glob("*.png")}
    assert set(pngs) >= FIGURES, sorted(pngs)
    for path in pngs.values():
        with Image.open(path) as image:
            assert image.format == "PNG" and min(image.size) > 100

    page = visit(out / "report.html", tmp_path / "report.png")
    assert page.console == [], page.console
    assert external_resources(page.dom) == []  # self-contained: opens offline, no CDN
    with Image.open(page.screenshot) as image:
        pixels = np.asarray(image.convert("L"), dtype=float)
    assert pixels.shape[0] >= 2000 and pixels.std() > 20, "the screenshot looks blank"
    assert (pixels < 100).mean() > 0.01, "no dark text or lines on the screenshot"

    # The numbers on the page are this run's.
    metrics = json.loads((out / "metrics.json").read_text())
    shown = dict(re.findall(r'data-metric="(\w+)">([^<]+)<', page.dom))
    final = metrics["final"]
    assert shown["test_accuracy"] == f"{final['test_accuracy']:.4f}"
    assert shown["valid_accuracy"] == f"{final['valid_accuracy']:.4f}"
    assert shown["best_epoch"] == str(final["best_epoch"])
    # The epoch table, read from the smdebug trial, matches the job's metric history.
    rows = re.findall(r"<tr><td class=\"num\">(\d+)</td>" + r"<td class=\"num\">([\d.]+)</td>" * 4, page.dom)
    assert [int(r[0]) for r in rows] == [h["epoch"] for h in metrics["history"]]
    for row, history in zip(rows, metrics["history"]):
        for value, name in zip(row[1:], ("train_loss", "train_accuracy", "valid_loss", "valid_accuracy")):
            assert abs(float(value) - history[name]) < 1e-3, (name, value, history[name])
    for breed in ("Beagle", "Siberian husky", "Toy poodle"):
        assert breed in page.dom
    # The Data section: the data check's counts per class and split, and the photos the shared set holds in
    # two splits (toy poodles in train and test), which the check finds and the default only warns about.
    check = json.loads((out / "data_check.json").read_text())
    html = (out / "report.html").read_text()
    for i, breed in enumerate(check["classes"]):
        row = re.search(rf'<tr data-class="{breed}">(.*?)</tr>', html).group(1)
        assert re.findall(r'<td class="num">(\d+)</td>', row) == [str(check["counts"][s][i]) for s in check["counts"]]
    assert f'data-finding="leaks">{len(check["leaks"])}<' in html and check["leaks"]
    assert "data check: leakage:" in trained_run.log

    # What the model looked at: the worst test mistakes (the predicted and the true class's map) and the most
    # confident right answer of each breed, overlays of the real photos that Chromium decodes and lays out.
    photos = json.loads((out / "explanations" / "index.json").read_text())["photos"]
    kinds = [p["kind"] for p in photos]
    assert kinds == sorted(kinds, key=lambda kind: kind != "mistake") and kinds.count("correct") == 3, kinds
    overlays = [m["label"] for p in photos for m in p["maps"]]
    assert len(overlays) == len(photos) + kinds.count("mistake")
    rendered = [image for image in rendered_images(out / "report.html", tmp_path) if image[0].startswith("map of ")]
    assert [alt.removeprefix("map of ").split(" (")[0] for alt, _, _ in rendered] == overlays
    for alt, width, height in rendered:
        assert 100 < max(width, height) <= 384, (alt, width, height)  # decoded; the job's bounded size
    assert 'id="explanations"' in page.dom and "white box bounds the hottest region" in page.dom

    # A healthy pretrained run raises no alarm: the loss neither explodes nor stalls nor overfits, and
    # PoorWeightInitialization says it does not judge pretrained weights.
    verdicts = {v["name"]: v for v in json.loads((out / "report.json").read_text())["rules"]}
    for rule in ("ExplodingTensor", "LossNotDecreasing", "Overfit"):
        assert verdicts[rule]["evaluated"] and not verdicts[rule]["triggered"], verdicts[rule]
    assert not any(v["triggered"] for v in verdicts.values()), verdicts
    poor = verdicts["PoorWeightInitialization"]
    assert not poor["evaluated"] and "pretrained weights" in poor["message"], poor
