"""The three programs around the detector, one per place:

- training: `python train/run.py` (run.py: arguments and main; trainer.py: the recipe on a Trainer; data/: sources,
  samples and the epoch order; transforms.py: augmentation profiles);
- evaluation and calibration: `python -m train.evaluation` (evaluation/);
- aligned training data: `python -m train.aligned` (aligned/).
"""
