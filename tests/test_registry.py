import pytest

from models import registry
from tests.conftest import make_config
from trainer.errors import TapeloopError


@pytest.mark.parametrize("name", ["cnn", "mlp"])
def test_build_model_creates_variables_before_any_training(tmp_path, name):
    model = registry.build_model(name, (28, 28, 1), 10, make_config(tmp_path))
    assert model.built and len(model.trainable_variables) > 0


def test_unknown_model_names_the_registered_ones(tmp_path):
    with pytest.raises(TapeloopError, match="one of cnn, mlp"):
        registry.build_model("resnet", (28, 28, 1), 10, make_config(tmp_path))
