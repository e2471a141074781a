"""examples/train_feature_aggregation.py: private training within 0.5 % of torch's."""
import importlib.util
from pathlib import Path


def test_feature_aggregation_example(capsys):
    path = Path(__file__).resolve().parents[1] / "examples" / "train_feature_aggregation.py"
    spec = importlib.util.spec_from_file_location("train_feature_aggregation", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(rows=512) < 0.005
    assert "% apart" in capsys.readouterr().out
