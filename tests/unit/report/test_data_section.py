"""The report's Data section, from a hand-written data_check.json and test confusion matrix."""

from __future__ import annotations

import json
import re

from dogbreed.job_outputs import DATA_CHECK_FILE, METRICS_FILE, DataCheck
from dogbreed.report.page import build_report

DATA_CHECK = {
    "classes": ["Beagle", "Siberian husky", "Toy poodle"],
    "counts": {"train": [120, 40, 8], "valid": [10, 9, 8], "test": [10, 10, 5]},
    "unreadable": {"train": 2, "valid": 0, "test": 1},
    "image_size": 224,
    "small": ["train/001.Beagle/tiny.jpg"],
    "grey": ["train/002.Siberian_husky/grey.jpg", "valid/001.Beagle/grey.png"],
    "cmyk": [],
    "duplicates": [["train/001.Beagle/a.jpg", "train/001.Beagle/a_copy.jpg"]],
    "leaks": [{"first_split": "train", "first": "train/003.Toy_poodle/p.jpg",
               "second_split": "test", "second": "test/003.Toy_poodle/p_again.jpg"}],
    "class_weights": [0.4667, 1.4, 7.0],
    "seconds": 0.25,
}
# test/confusion_matrix.csv: Beagle 9 of 10 right, husky 10 of 10, poodle 2 of 5.
CONFUSION = """true \\ predicted,Beagle,Siberian husky,Toy poodle
Beagle,9,1,0
Siberian husky,0,10,0
Toy poodle,3,0,2
"""


def test_data_section_shows_counts_beside_test_accuracy_and_every_finding(tmp_path):
    (tmp_path / DATA_CHECK_FILE).write_text(json.dumps(DATA_CHECK))
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "confusion_matrix.csv").write_text(CONFUSION)
    (tmp_path / METRICS_FILE).write_text(json.dumps({"final": {}, "classes": DATA_CHECK["classes"]}))
    html = build_report(tmp_path, None, None).read_text()

    assert DataCheck.from_dict(DATA_CHECK).to_dict() == DATA_CHECK  # the JSON round-trips
    section = html[html.index('<section id="data">'):]
    section = section[:section.index("</section>")]

    def cells(name: str) -> list[str]:
        return re.findall(r"<td[^>]*>([^<]*)</td>", re.search(rf'<tr data-class="{name}">(.*?)</tr>', section).group(1))

    assert cells("Beagle") == ["Beagle", "120", "10", "10", "0.900", "0.467"]
    assert cells("Siberian husky") == ["Siberian husky", "40", "9", "10", "1.000", "1.400"]
    assert cells("Toy poodle") == ["Toy poodle", "8", "8", "5", "0.400", "7.000"]
    assert "<th>train images</th><th>valid images</th><th>test images</th>" in section
    counts = dict(re.findall(r'data-finding="(\w+)">(\d+)<', section))
    assert counts == {"leaks": "1", "duplicates": "1", "small": "1", "grey": "2", "cmyk": "0"}
    assert "train/003.Toy_poodle/p.jpg = test/003.Toy_poodle/p_again.jpg" in section
    assert "train/001.Beagle/a.jpg = train/001.Beagle/a_copy.jpg" in section
    assert "valid/001.Beagle/grey.png" in section
    assert dict(re.findall(r'data-unreadable="(\w+)">(\d+)<', section)) == {"train": "2", "valid": "0", "test": "1"}
    assert '<a href="#data">Data</a>' in html
    assert '<div class="warning">data: 1 files are in two splits (train/test): leakage, see Data</div>' in html
    # The test results' per-class table has each class's training images beside its accuracy.
    assert dict(re.findall(r'data-train-images="([^"]+)">(\d*)<', html)) == {
        "Beagle": "120", "Siberian husky": "40", "Toy poodle": "8"}


def test_without_class_weights_there_is_no_weight_column_and_without_the_file_a_warning(tmp_path):
    (tmp_path / METRICS_FILE).write_text(json.dumps({"final": {}, "classes": DATA_CHECK["classes"]}))
    html = build_report(tmp_path, None, None).read_text()
    assert '<section id="data">' not in html and f"no {DATA_CHECK_FILE}" in html

    (tmp_path / DATA_CHECK_FILE).write_text(json.dumps({**DATA_CHECK, "class_weights": None}))
    html = build_report(tmp_path, None, None).read_text()
    section = html[html.index('<section id="data">'):html.index("</section>", html.index('<section id="data">'))]
    assert "class weight" not in section and "class_weights=balanced" not in section
    # No test results: the accuracy cell is empty, the counts are there.
    row = re.search(r'<tr data-class="Toy poodle">(.*?)</tr>', section).group(1)
    assert re.findall(r"<td[^>]*>([^<]*)</td>", row) == ["Toy poodle", "8", "8", "5", ""]
