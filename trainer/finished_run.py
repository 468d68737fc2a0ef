"""A finished run loaded for diagnosis, tuning, export and scoring: its settings (RUN/flags.txt), its
data and its final model, as train.py scored and exported it."""

import dataclasses

from data import pipeline
from trainer.batchnorm import StatisticsEstimator
from trainer.checkpoints import final_weights_dir, restore_model_weights
from trainer.run_directory import load_run_config
from trainer.run_inputs import build_model, make_weight_average


def final_model(run_dir: str, data_dir: str | None = None, mixed_precision: str | None = None):
    """A finished run's config, data, and final model as train.py scored and exported it (averaged
    weights, precise batch-norm statistics if the run used them), with its statistics estimator;
    computing in `mixed_precision` if given (e.g. "none": float32 for a converter), else as the run did."""
    config = load_run_config(run_dir)
    config = dataclasses.replace(config, data_dir=data_dir or config.data_dir,
                                 mixed_precision=mixed_precision or config.mixed_precision)
    data = pipeline.prepare_data(config)
    model = build_model(config, data.spec, pretrained=False)
    restore_model_weights(model, final_weights_dir(run_dir), make_weight_average(config, model))
    bn_statistics = StatisticsEstimator(model, data.train, data.spec, config)
    if config.precise_bn_batches:
        bn_statistics.estimate(config.precise_bn_batches)
    return config, data, model, bn_statistics
