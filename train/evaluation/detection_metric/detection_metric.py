"""Real-vs-fake image detection metrics as a Hugging Face `evaluate` module.

A thin wrapper: the numbers come from `train.evaluation.metrics.detection_metrics`, the implementation training and the
evaluation harness use, so run this from the repository (where `train` is importable). Offline:

    import evaluate
    metric = evaluate.load("train/evaluation/detection_metric")   # or train.evaluation.metrics.load_detection_metric()
    metric.compute(predictions=[0.9, 0.2], references=[1, 0], threshold=0.5)
"""
import datasets
import evaluate

from train.evaluation.metrics import detection_metrics

_DESCRIPTION = """Binary detection metrics for AI-generated images, positive class = fake (label 1): accuracy,
balanced accuracy, precision, recall, F1, ROC-AUC, average precision, TPR at 1% and 5% FPR, expected calibration
error (15 equal-width bins of p_fake) and the confusion matrix [[tn, fp], [fn, tp]]. Undefined metrics are None."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: probability that each image is fake (floats in [0, 1]).
    references: true labels, 0 = real, 1 = fake.
    threshold: an image is predicted fake when its probability is >= threshold (default 0.5).
Returns:
    dict with keys n, accuracy, balanced_accuracy, precision, recall, f1, roc_auc, average_precision,
    tpr_at_1pct_fpr, tpr_at_5pct_fpr, ece, confusion_matrix.
Example:
    >>> metric.compute(predictions=[0.9, 0.2, 0.6, 0.4], references=[1, 0, 0, 1])["accuracy"]
    0.5
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class DetectionMetric(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("float64"),
                                        "references": datasets.Value("int32")}),
        )

    def _compute(self, predictions, references, threshold: float = 0.5):
        return detection_metrics(references, predictions, threshold)
