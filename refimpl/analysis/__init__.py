"""The paper's analyses (its Section 4): which neuron detects faces, against which baselines,
what it likes best, how invariant it is, and what fine-tuning adds.

- :mod:`.activations` every sublayer output of the model on a set of images
- :mod:`.neurons`     decision-stump accuracy of every neuron, the best neuron, top stimuli
- :mod:`.baselines`   chance, random weights and the best linear filter (Table 1)
- :mod:`.stimulus`    the optimal stimulus of eq. 2 (projected gradient ascent on the sphere)
- :mod:`.invariance`  response curves under scale, translation, in-plane rotation (Figs. 4-5)
- :mod:`.finetune`    one-vs-all logistic classifiers, top-only vs fine-tuned (Table 2)
"""

from .activations import collect_activations, model_input, sublayer_names, sublayer_shapes
from .baselines import (LinearBaseline, chance_accuracy, linear_filter_baseline,
                        random_weights_baseline)
# ``finetune`` (the function) is not re-exported: it would hide the module of the same name
# (``import refimpl.analysis.finetune``); use ``from refimpl.analysis.finetune import finetune``.
from .finetune import FinetuneResult, finetune_loss, top_name
from .invariance import UNAVAILABLE, Curve, invariance_curves, response_curve
from .neurons import Neuron, NeuronScan, neuron_values, scan_neurons, stump_accuracy, top_stimuli
from .stimulus import Ascent, Stimulus, maximise_on_sphere, optimal_stimulus

__all__ = [
    "collect_activations", "model_input", "sublayer_names", "sublayer_shapes",
    "LinearBaseline", "chance_accuracy", "linear_filter_baseline", "random_weights_baseline",
    "FinetuneResult", "finetune_loss", "top_name",
    "UNAVAILABLE", "Curve", "invariance_curves", "response_curve",
    "Neuron", "NeuronScan", "neuron_values", "scan_neurons", "stump_accuracy", "top_stimuli",
    "Ascent", "Stimulus", "maximise_on_sphere", "optimal_stimulus",
]
