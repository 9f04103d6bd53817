"""explanations/index.json: what the training job writes is what the report reads."""

from __future__ import annotations

import json

from dogbreed.job_outputs import (
    CORRECT,
    EXPLANATIONS_INDEX_FILE,
    MISTAKE,
    ClassMap,
    ExplainedPhoto,
    ExplanationsIndex,
)


def test_the_index_round_trips_rounded_under_the_keys_the_report_reads(tmp_path):
    mistake = ExplainedPhoto(
        MISTAKE, "049.Chihuahua/Chihuahua_1.jpg", 48, "Chihuahua", 0, "Affenpinscher", 0.612345, 0.10004,
        (ClassMap(0, "Affenpinscher", "mistake_01_predicted.jpg", (1.04, 2.0, 300.26, 199.9), 3.123456),
         ClassMap(48, "Chihuahua", "mistake_01_true.jpg", (0.0, 0.0, 10.0, 10.0), -1.5)),
    )
    correct = ExplainedPhoto(
        CORRECT, "001.Affenpinscher/Affenpinscher_2.jpg", 0, "Affenpinscher", 0, "Affenpinscher", 0.9, 0.9,
        (ClassMap(0, "Affenpinscher", "correct_01_predicted.jpg", (5.0, 6.0, 7.0, 8.0), 2.0),),
    )
    index = ExplanationsIndex("test", 40, 2, 8, 12, (mistake, correct))

    path = index.write(tmp_path)

    assert path == tmp_path / EXPLANATIONS_INDEX_FILE and path.read_text().endswith("}\n")
    raw = json.loads(path.read_text())
    assert list(raw) == ["split", "images", "classes_with_correct", "max_mistakes", "max_classes", "photos"]
    assert list(raw["photos"][0]) == ["kind", "image", "true", "true_label", "predicted", "predicted_label",
                                      "probability", "true_probability", "maps"]
    assert raw["photos"][0]["probability"] == 0.6123 and raw["photos"][0]["true_probability"] == 0.1
    assert raw["photos"][0]["maps"][0] == {"class": 0, "label": "Affenpinscher", "file": "mistake_01_predicted.jpg",
                                           "box": [1.0, 2.0, 300.3, 199.9], "logit": 3.1235}
    read = ExplanationsIndex.read(tmp_path)
    assert read.of_kind(MISTAKE)[0].maps[1] == mistake.maps[1] and read.of_kind(CORRECT) == [correct]
    assert read.to_dict() == raw
