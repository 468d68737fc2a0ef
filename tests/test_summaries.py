import numpy as np

from tests.conftest import read_scalars, read_texts
from trainer.summaries import SummaryWriters, write_scalars, write_text


def test_scalars_land_in_the_phase_folder_under_their_tags(tmp_path):
    writers = SummaryWriters(str(tmp_path))
    write_scalars(writers.train, {"loss/total": 2.5, "accuracy": 0.25}, step=10)
    write_scalars(writers.train, {"loss/total": 1.5, "accuracy": 0.5}, step=20)
    write_scalars(writers.eval, {"accuracy": 0.75}, step=20)
    writers.close()
    train = read_scalars(tmp_path / "train")
    assert train["loss/total"] == [(10, 2.5), (20, 1.5)]
    np.testing.assert_allclose([value for _, value in train["accuracy"]], [0.25, 0.5])
    assert read_scalars(tmp_path / "eval") == {"accuracy": [(20, 0.75)]}


def test_text_keeps_its_lines_apart_for_the_text_dashboard(tmp_path):
    writers = SummaryWriters(str(tmp_path))
    write_text(writers.train, "diagnostics", "mnist: 60000 examples\nclasses: 10", step=0)
    writers.close()
    assert read_texts(tmp_path / "train") == {"diagnostics": [(0, "mnist: 60000 examples\n\nclasses: 10")]}
    assert read_scalars(tmp_path / "train") == {}
