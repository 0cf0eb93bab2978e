"""Evaluation and calibration of a saved detector: `python -m train.evaluation` (run.py).

run.py: arguments and main; steps.py: main's steps, which write results.json (schema: modeling.formats) and
results.md (report.py);
predict.py: files -> logits with the model's eval transform; metrics.py: the detection metrics (also used by
training); calibration.py: temperature and threshold; perturbations.py: the robustness sweep; plots.py: the PNGs.
"""
