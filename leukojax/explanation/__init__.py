"""Explanations of trained LeukoJAX classifiers: Grad-CAM, LIME, and how far the two agree.

`python -m leukojax.explain --workdir W --method gradcam|lime|both IMAGES...`; docs/explanations.md.
"""

from leukojax.explanation.agreement import Agreement, measure
from leukojax.explanation.gradcam import FINAL, FINAL_TAP, GradCAM, GradCAMLayerError, GradCAMResult
from leukojax.explanation.lime_explainer import BatchedClassifier, LimeExplainer, LimeResult
from leukojax.explanation.explainer import Explainer, ImageReadError, Options, explain_files, explain_workdir
