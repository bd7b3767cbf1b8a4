"""Explanations of trained LeukoJAX classifiers: Grad-CAM, LIME, and how far the two agree.

`python -m leukojax.explain --workdir W --method gradcam|lime|both IMAGES...`; docs/explanations.md.
"""

from leukojax.explain.agreement import Agreement, measure
from leukojax.explain.gradcam import FINAL, FINAL_TAP, GradCAM, GradCAMLayerError, GradCAMResult
from leukojax.explain.lime_explainer import BatchedClassifier, LimeExplainer, LimeResult
from leukojax.explain.runner import Explainer, ImageReadError, Options, explain_files, explain_workdir
