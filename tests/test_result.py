"""The transform record: status from the warnings, NaN metrics never make a file unreadable, 3-D matrices."""
import numpy as np
import pytest

from clem_bridge.result import Registration, load_transform_json


def reg(**kw):
    return Registration(fixed_to_moving=np.eye(3), fixed_shape=(10, 10), moving_shape=(10, 10), method="test", **kw)


def test_status_follows_the_warnings_unless_set():
    assert reg().outcome == "ok" and reg(warnings=["low MI"]).outcome == "uncertain"
    assert reg(warnings=["x"], status="failed").to_record().status == "failed"
    with pytest.raises(ValueError):
        reg(status="great").outcome


def test_nan_metric_is_left_out_with_a_warning_and_reads_back(tmp_path):
    r = reg(metrics={"ncc": float("nan"), "mi": 0.4}, timings={"total_s": float("inf")},
            mi_curve=[0.1, float("nan"), 0.3])
    path = r.save_json(tmp_path / "transform.json")
    back = load_transform_json(path)
    assert back.metrics == {"mi": 0.4} and back.timings == {} and back.mi_curve == [0.1, 0.3]
    assert back.outcome == "uncertain" and any("ncc" in w and "total_s" in w for w in back.warnings)


def test_three_d_record_round_trip(tmp_path):
    m = np.diag([1.0, -1.0, 2.0, 1.0])       # mirrored in y, z stretched
    r = Registration(fixed_to_moving=m, fixed_shape=(4, 8, 8), moving_shape=(2, 8, 8), method="test", ndim=3)
    back = load_transform_json(r.save_json(tmp_path / "t.json"))
    assert back.ndim == 3 and np.allclose(back.fixed_to_moving, m) and back.fixed_shape == (4, 8, 8)
