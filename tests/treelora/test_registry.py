import pytest

from treelora.config import METHODS, PRESETS, make_config
from treelora.methods import METHOD_REGISTRY
from treelora.registry import Registry
from treelora.regularizers import REGULARIZER_REGISTRY
from treelora.selectors import SELECTOR_REGISTRY

from .learners import make_learner, tiny_stream


def test_registry_registers_in_order_names_classes_and_rejects_unknown_names():
    reg: Registry[type] = Registry("widget")

    @reg.register("b")
    class B:
        pass

    @reg.register("a")
    class A:
        pass

    assert reg.names() == ("b", "a") and list(reg) == ["b", "a"] and len(reg) == 2
    assert reg.get("a") is A and A.name == "a" and B.name == "b"
    assert "a" in reg and "c" not in reg
    with pytest.raises(ValueError, match=r"unknown widget 'c'; known: b, a"):
        reg.get("c")
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a")(type("Other", (), {}))
    reg.unregister("b")
    assert reg.names() == ("a",)


def test_builtin_names_in_registration_order():
    assert METHOD_REGISTRY.names() == ("treelora", "treelora-official", "seqlora", "head-only", "olora", "ewc")
    assert SELECTOR_REGISTRY.names() == ("tree-lcb", "flat-lcb", "official-softmax", "random", "none")
    assert REGULARIZER_REGISTRY.names() == ("l1-grad", "l1-grad-top", "l1-grad-fd", "official", "none")
    assert METHODS == METHOD_REGISTRY.names()
    assert PRESETS["treelora"] == dict(signature="grad", split="l1-median", selector="tree-lcb", regularizer="l1-grad")


@pytest.mark.parametrize(
    "field, registry", [("method", METHOD_REGISTRY), ("selector", SELECTOR_REGISTRY),
                        ("regularizer", REGULARIZER_REGISTRY)]
)
def test_unknown_name_error_lists_the_known_names(field, registry):
    with pytest.raises(ValueError) as err:
        make_config("nope") if field == "method" else make_config("treelora", **{field: "nope"})
    assert "nope" in str(err.value) and ", ".join(registry.names()) in str(err.value)
    with pytest.raises(ValueError, match=", ".join(registry.names())):
        registry.get("nope")


def test_attention_kernel_follows_the_regulariser():
    kernels = {r: make_config("treelora", regularizer=r).attn_implementation for r in REGULARIZER_REGISTRY.names()}
    assert kernels == {"l1-grad": "eager", "l1-grad-top": "eager", "l1-grad-fd": "sdpa", "official": "sdpa",
                       "none": "sdpa"}


@pytest.fixture(scope="module")
def stream():
    return tiny_stream()


@pytest.mark.parametrize(
    "overrides",
    [{"selector": s} for s in SELECTOR_REGISTRY.names()] + [{"regularizer": r} for r in REGULARIZER_REGISTRY.names()],
    ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()),
)
def test_every_registered_selector_and_regulariser_builds_a_learner_that_trains(overrides, stream):
    """(Every method is run end to end in test_learner.) ``official`` acts on A and needs weight signatures."""
    method = "treelora-official" if overrides.get("regularizer") == "official" else "treelora"
    learner = make_learner(method, stream, epochs=1, **overrides)
    res = learner.run_stream(stream)
    assert res["steps_per_task"] == [6, 6] and len(learner.tree) == 2
    chosen = sum(res["chosen_per_task"][1].values())
    assert chosen == (0 if overrides.get("selector") == "none" else 6 * learner.lora.num_layers)
