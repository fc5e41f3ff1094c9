"""simulations/step_timer.py: a part's time and calls are counted for module functions, class methods and one
instance's methods, results are unchanged, and restore puts every original back."""

import types

from simulations.step_timer import StepTimer


class Box:
    def double(self, x):
        return 2 * x


def test_step_timer_counts_and_restores():
    mod = types.ModuleType("m")
    mod.f = lambda x: x + 1
    original_f = mod.f
    a, b = Box(), Box()
    with StepTimer() as timer:
        timer.wrap(mod, "f", "f")
        timer.wrap(Box, "double", "double")
        timer.wrap(a, "double", "a")
        assert mod.f(1) == 2 and a.double(3) == 6 and b.double(4) == 8
        parts = timer.take()
        assert parts["f"]["calls"] == 1 and parts["double"]["calls"] == 2 and parts["a"]["calls"] == 1
        assert all(v["s"] >= 0 for v in parts.values())
        assert timer.take() == {}
    assert mod.f is original_f and "double" not in a.__dict__ and Box.__dict__["double"].__name__ == "double"
    assert not hasattr(Box.__dict__["double"], "__wrapped__")
