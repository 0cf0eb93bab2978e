"""'This verdict is wrong' stores an imagefolder, and train/run.py's continual phase learns from it (the loop in the
README's "Feedback that feeds training"), end to end on a tiny model."""
import csv
import hashlib

import gradio as gr
import pytest
from conftest import FAST, make_image, make_image_folder

from modeling.formats import read_training_record
from modeling.imageio import read_image
from modeling.inference import Detector
from space.feedback import save_feedback
from space.single_tab import analyse
from train import run


def test_feedback_folder_feeds_the_continual_phase(tmp_path, tiny_detector_dir):
    detector = Detector.from_pretrained(tiny_detector_dir, backend="torch")
    feedback = tmp_path / "feedback"
    uploads = [make_image(tmp_path / "uploads" / f"{i}.{'png' if i % 2 else 'jpg'}", seed=i, fake=i % 2 == 0,
                          fmt="PNG" if i % 2 else "JPEG") for i in range(4)]
    for i, path in enumerate(uploads):
        state = analyse(detector, {"path": str(path)}, detector.threshold)[6]
        assert "stored" in save_feedback(feedback, state, "fake" if i % 2 == 0 else "real", detector.name)
    assert "already reported" in save_feedback(feedback, state, "real", detector.name)
    with pytest.raises(gr.Error, match="Analyse an image first"):
        save_feedback(feedback, None, "real", detector.name)

    with (feedback / "metadata.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["label"] for r in rows] == ["fake", "real", "fake", "real"]
    assert {r["source"] for r in rows} == {"feedback"} and {r["model"] for r in rows} == {detector.name}
    for row, upload in zip(rows, uploads):
        assert (feedback / row["file_name"]).read_bytes() == upload.read_bytes()  # the original bytes
        # <label>/<sha256>.<ext>, as the README says
        digest = hashlib.sha256(upload.read_bytes()).hexdigest()
        assert row["file_name"] == f"{row['label']}/{digest}{upload.suffix}"

    # The loop: the feedback folder as the new source, old data replayed, then serve the result.
    old = make_image_folder(tmp_path / "old", n_per_class=4, seed=1)
    out = tmp_path / "retrained"
    run.main(["--init_from", str(tiny_detector_dir), "--train_dirs", str(feedback), "--rehearsal_sources", str(old),
              "--rehearsal_ratio", "1", "--train_profile", "continual", "--output_dir", str(out), "--max_steps", "1",
              "--per_device_train_batch_size", "8", *FAST])
    record = read_training_record(out)
    assert record.phase == "continual"
    (new,) = record.data["train"]
    assert new["n"] == 4 and new["sources"] == ["feedback"] and (new["n_real"], new["n_fake"]) == (2, 2)
    retrained = Detector.from_pretrained(out, backend="torch")
    assert retrained.predict(read_image(uploads[0])).fake_probability != pytest.approx(
        Detector.from_pretrained(tiny_detector_dir, backend="torch").predict(read_image(uploads[0])).fake_probability, abs=1e-7)
