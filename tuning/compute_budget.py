"""improve.py's --max_compute: a trial's training compute against the starting run's, so that a recipe
made for a time budget is improved within it (there, a longer or wider run is not a fix but a trade).

Compute is the forward FLOPs of one example (models/size.py, counted on the model the flags build)
times the examples trained on (the updates the flags ask for, times their batch): the backward pass
is about twice the forward for every model, so the ratio between two runs is the same either way.
"""

import dataclasses

from data import catalog, pipeline
from settings.arguments import flag_lines
from models import size
from trainer import run_inputs
from settings.config import TrainConfig


def training_compute(config: TrainConfig, spec: catalog.DatasetSpec, train_examples: int) -> float:
    """Forward FLOPs per example times the examples a run of `config` trains on."""
    batch = pipeline.update_batch_size(config)
    steps = run_inputs.planned_steps(config, pipeline.steps_per_epoch(train_examples, batch))
    return float(steps * batch * forward_flops(config, spec))


COUNTED_FORWARD_FLOPS: dict[tuple, int] = {}


def forward_flops(config: TrainConfig, spec: catalog.DatasetSpec) -> int:
    """The forward FLOPs of one example of the model `config` builds for `spec`, counted once per distinct
    model: improve.py asks for every finding's changes, most of which leave the model as it is."""
    model_key = (config.model, spec.image_shape, spec.num_classes, run_inputs.run_precision(config).setting,
                 repr(sorted(run_inputs.model_settings(config, pretrained=False).items())))
    if model_key not in COUNTED_FORWARD_FLOPS:
        model = run_inputs.build_model(config, spec, pretrained=False)
        COUNTED_FORWARD_FLOPS[model_key] = size.forward_flops(model, spec.image_shape)
    return COUNTED_FORWARD_FLOPS[model_key]


@dataclasses.dataclass(frozen=True)
class ComputeBudget:
    """At most `limit` times the starting run's training compute per trial (None: no limit), on the
    dataset all trials share (`spec`, `train_examples` training examples). A trial trains
    `trainings_per_trial` runs' worth of its settings: 1, or K under K-fold cross-validated judging
    (its run, and K fold models on (K - 1) / K of the examples each)."""

    limit: float | None
    spec: catalog.DatasetSpec | None = None
    train_examples: int = 0
    start: float = 0.0  # The starting run's training compute.
    trainings_per_trial: int = 1

    @classmethod
    def of(cls, limit: float | None, config: TrainConfig, data: pipeline.PreparedData,
           trainings_per_trial: int = 1) -> "ComputeBudget":
        if limit is None:
            return cls(None)
        train_examples = len(data.train[1])
        return cls(limit, data.spec, train_examples, training_compute(config, data.spec, train_examples),
                   trainings_per_trial)

    def factor(self, config: TrainConfig, changes: dict) -> float:
        """The compute of a trial of `config` with `changes`, its judging included, in multiples of the
        starting run's."""
        changed = dataclasses.replace(config, **changes)
        return self.trainings_per_trial * training_compute(changed, self.spec, self.train_examples) / self.start

    def affordable(self, findings: list, config: TrainConfig) -> tuple[list, list[str]]:
        """The `findings` whose flag changes, applied to `config`, stay within the limit, and a note for
        each of the others."""
        if self.limit is None:
            return findings, []
        kept, notes = [], []
        for finding in findings:
            factor = self.factor(config, finding.flags)
            if factor <= self.limit * (1 + 1e-6):
                kept.append(finding)
            else:
                judged = (f", its {self.trainings_per_trial} fold models included" if self.trainings_per_trial > 1
                          else "")
                notes.append(f"{finding.kind} ({flag_lines(finding.flags)}) was not tried: it would train "
                             f"{factor:.2f}x the starting run's compute{judged}, over --max_compute={self.limit:g}")
        return kept, notes
