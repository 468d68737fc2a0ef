import numpy as np
import tensorflow as tf

from models import registry
from tests.helpers import make_config
from trainer.run_inputs import model_settings
from trainer import checkpoints
from trainer.averaging import WeightAverage


def small_cnn(tmp_path):
    config = make_config(tmp_path, "--model_width=4")
    return registry.build_model("cnn", (28, 28, 1), 10, **model_settings(config))


def float_values(model):
    return [variable.numpy().copy() for variable in model.variables if variable.dtype.startswith("float")]


def test_the_average_follows_the_weights_with_a_warmed_up_decay(tmp_path):
    model = small_cnn(tmp_path)
    average = WeightAverage(model, decay=0.9)
    expected = float_values(model)
    for update in range(30):
        for variable in model.variables:
            if variable.dtype.startswith("float"):
                variable.assign(variable + 1.0)
        decay = min(0.9, (1 + update) / (10 + update))
        expected = [decay * old + (1 - decay) * new for old, new in zip(expected, float_values(model))]
        average.update()
    assert int(average.updates.numpy()) == 30
    for kept, wanted in zip(average.averages, expected):
        np.testing.assert_allclose(kept.numpy(), wanted, rtol=1e-5)


def test_batch_norm_statistics_are_averaged_with_the_weights(tmp_path):
    model = small_cnn(tmp_path)
    average = WeightAverage(model, decay=0.5)
    averaged_paths = {variable.path for variable in average._model_variables}
    assert any(path.endswith("moving_mean") for path in averaged_paths)
    assert any(path.endswith("moving_variance") for path in averaged_paths)
    assert not any(path.endswith("seed_generator_state") for path in averaged_paths)  # Integers stay out.


def test_swapped_in_evaluates_with_the_average_and_restores_the_raw_weights(tmp_path):
    model = small_cnn(tmp_path)
    average = WeightAverage(model, decay=0.9)
    images = tf.random.uniform((4, 28, 28, 1), seed=3)
    initial_logits = model(images).numpy()
    model.head.kernel.assign(model.head.kernel * 3.0)
    raw_logits = model(images).numpy()
    with average.swapped_in():
        np.testing.assert_allclose(model(images).numpy(), initial_logits, rtol=1e-5)
    np.testing.assert_allclose(model(images).numpy(), raw_logits, rtol=1e-6)


def test_restoring_with_the_average_puts_the_checkpointed_average_in_the_model(tmp_path):
    model = small_cnn(tmp_path)
    average = WeightAverage(model, decay=0.9)
    model.head.kernel.assign(model.head.kernel + 1.0)
    average.update()  # Warm-up decay 0.1: the average moves 90% of the way.
    tf.train.Checkpoint(model=model, weight_average=average).save(str(tmp_path / "saved" / "ckpt"))
    wanted_kernel = average.averages[[variable.path for variable in average._model_variables].index(
        model.head.kernel.path)].numpy()

    fresh = small_cnn(tmp_path)
    checkpoints.restore_model_weights(fresh, str(tmp_path / "saved"), WeightAverage(fresh, decay=0.9))
    np.testing.assert_allclose(fresh.head.kernel.numpy(), wanted_kernel)
    raw = small_cnn(tmp_path)
    checkpoints.restore_model_weights(raw, str(tmp_path / "saved"))
    np.testing.assert_allclose(raw.head.kernel.numpy(), model.head.kernel.numpy())
