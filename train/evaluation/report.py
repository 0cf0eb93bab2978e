"""results.md: the tables of an evaluation's results.json, for people."""
from __future__ import annotations

from modeling.formats import (
    DetectionMetrics,
    EvaluationResults,
    class_counts,
    false_positive_rate,
    format_cell,
    markdown_table,
)


def _metrics_table(blocks: dict[str, DetectionMetrics], first_column: str) -> list[str]:
    """One row per block. Error rates per class instead of precision/F1, which mean nothing in a one-class group:
    a source of reals is judged by how many it flags, a generator's fakes by how many are caught."""
    columns = ("accuracy", "balanced_accuracy", "roc_auc", "average_precision", "tpr_at_1pct_fpr",
               "tpr_at_5pct_fpr", "ece")
    header = [first_column, "n", "real", "fake", "reals flagged (FPR)", "fakes caught (TPR)", "acc", "bal. acc",
              "AUC", "AP", "TPR@1%FPR", "TPR@5%FPR", "ECE"]
    rows = [[name, m["n"], *class_counts(m), false_positive_rate(m), m["recall"], *(m[c] for c in columns)]
            for name, m in blocks.items()]
    return markdown_table(header, rows).splitlines()


def render_markdown(results: EvaluationResults) -> str:
    model, data, overall = results["model"], results["data"], results["overall"]
    (tn, fp), (fn, tp) = overall["confusion_matrix"]
    lines = [
        f"# Evaluation of `{model['name_or_path']}`", "",
        f"Model: {model['architecture']} at {model['image_size']} px, temperature {format_cell(model['temperature'])}, "
        f"decision threshold {format_cell(model['threshold'])} (fake when p(fake) >= threshold).  ",
        f"Data: {', '.join(f'`{d}`' for d in data['dirs'])}: {data['n']} images ({data['n_real']} real, "
        f"{data['n_fake']} fake).  ",
        f"Runtime: {results['runtime']['seconds']:.0f} s on {results['runtime']['device']} "
        f"({results['runtime']['images_per_second']:.1f} images/s on the clean pass).", "",
        "Positive class = fake. TPR@x%FPR is the share of fakes caught when at most x% of reals are flagged; "
        "ECE uses 15 equal-width bins of p(fake). — marks a metric that is undefined for that group "
        "(e.g. AUC or balanced accuracy where all images are one class: read recall for a generator's fakes, "
        "accuracy for a source of reals).", "",
        "## Overall", "", *_metrics_table({"all": overall}, ""), "",
        f"Precision {format_cell(overall['precision'])}, F1 {format_cell(overall['f1'])}. Confusion matrix (rows true real/fake, "
        f"columns predicted real/fake): [[{tn}, {fp}], [{fn}, {tp}]]", "",
        "## By source", "", *_metrics_table(results["by_source"], "source"), "",
        "## By generator", "", *_metrics_table(results["by_generator"], "generator"), "",
    ]
    if results.get("by_generator_vs_real"):
        lines += ["## Each generator against all reals", "",
                  "Every generator's fakes pooled with all the real images: how well the detector separates that "
                  "generator from real photos.", "",
                  *_metrics_table(results["by_generator_vs_real"], "generator"), ""]
    if results.get("robustness"):
        clean_auc, clean_bacc = overall["roc_auc"], overall["balanced_accuracy"]

        def delta(value, ref):
            return "—" if value is None or ref is None else f"{value - ref:+.3f}"

        rows = [["none", clean_auc, "", clean_bacc, "", overall["recall"], overall["tpr_at_5pct_fpr"], overall["ece"]]]
        rows += [[name, m["roc_auc"], delta(m["roc_auc"], clean_auc), m["balanced_accuracy"],
                  delta(m["balanced_accuracy"], clean_bacc), m["recall"], m["tpr_at_5pct_fpr"], m["ece"]]
                 for name, m in results["robustness"].items()]
        lines += ["## Robustness", "",
                  "The same images after each perturbation (applied to the file before the model's preprocessing).",
                  "", markdown_table(["perturbation", "AUC", "Δ AUC", "bal. acc", "Δ bal. acc", "recall", "TPR@5%FPR",
                                      "ECE"], rows), ""]
    if results.get("calibration"):
        c, s = results["calibration"], results["calibration"]["calibration_set"]
        chosen = (f"for a target FPR of {c['target_fpr']:.0%}" if c.get("target_fpr") is not None
                  else f"by policy {c.get('threshold_policy')}")
        lines += ["## Calibration", "",
                  f"Fitted on `{c['fitted_on']}` ({s['n_real']} real, {s['n_fake']} fake), stored in the model's "
                  f"config: temperature {c['temperature']:.3f}, threshold {c['threshold']:.4f} {chosen} "
                  f"(on that folder: FPR {format_cell(s['fpr'])}, TPR {format_cell(s['tpr'])}; NLL "
                  f"{s['nll_before']:.3f} -> {s['nll_after']:.3f}).  ",
                  f"ECE on the evaluated data: {format_cell(c['ece_before'])} before, {format_cell(c['ece_after'])} after.", ""]
    lines += ["## Plots", "", "![ROC](roc.png) ![scores](scores.png) ![reliability](reliability.png)", ""]
    return "\n".join(lines)
