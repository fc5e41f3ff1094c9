"""The run config of a federation: every key once, with its unit and default, and its mapping to a learner config.

Run-config keys are kebab-case (``flwr run . --run-config 'local-steps=8 lam=0.5'``); ``pyproject.toml``'s
``[tool.flwr.app.config]`` lists every key with the same default (Flower reads defaults from there; a test keeps
the two in step). The client app and the server app both parse the run config with :meth:`FedSettings.from_run_config`.

A client's continual learner takes its hyper-parameters from the run config by one rule (:meth:`learner_config`):
every field whose name is also a :class:`treelora.config.LearnerConfig` field is passed on (``lr``, ``lam``,
``batch-size``, ``leaf-size``, ``lcb-c``, ...); an empty string (``regularizer``, ``l1-reduction``) means "the
learner method's default". The learner method is ``local-method``, or what the federated method forces.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from ..config import L1_REDUCTIONS, LearnerConfig, config_fields, make_config
from ..heads import HEAD_REGISTRY
from ..overrides import coerce
from ..probe import PROBE_NORMS
from ..sketch import L1_ESTIMATORS
from ..tree_splits import SPLIT_REGISTRY
from .methods import FedMethod, fed_method
from .scenarios import SCENARIOS

__all__ = ["FedSettings", "LEARNER_KEYS", "NOT_PASSED_TO_LEARNER"]

NOT_PASSED_TO_LEARNER = frozenset({"method"})  # same name, other meaning: the federated method, not the learner's
TREE_SIGNATURES = ("live", "probe-grad", "probe-fisher", "probe-input", "probe-input-grad")
CANDIDATE_RULES = ("nearest", "lcb")
SHARE_GROUPS = ("running", "route")


@dataclass(frozen=True)
class FedSettings:
    """Everything a client or the server reads from the run config (units in comments)."""

    method: str = "treelora"  # federated method (treelora.fed.methods): treelora | fedavg-lora | local-only | ...
    local_method: str = "treelora"  # the learner each client runs (fedavg-lora forces seqlora)
    num_rounds: int = 0  # 0 = as many rounds as the longest client schedule
    scenario: str = "staggered"  # staggered | families | identical | conflicting (treelora.fed.scenarios)
    families: int = 2  # client groups of the families and conflicting scenarios
    stream: str = "wordnet"
    backbone: str = "minilm"
    tasks_per_client: int = 3
    rounds_per_task: int = 2
    local_steps: int = 8  # optimisation steps per client per round
    batch_size: int = 16  # examples per local step
    max_length: int = 32  # tokens
    lr: float = 1e-3  # Adam learning rate of the LoRA parameters
    head_lr: float = 1e-2  # Adam learning rate of the classification head
    head: str = "linear"  # what scores a client's test examples (treelora.heads): linear | ncm (cosine to each class's
    # mean feature, computed on the client's own shard when a task ends) | slca (head refit on class Gaussians)
    share_prototypes: bool = False  # head=ncm: each report also carries its task's per-class feature sums and counts
    # (live adapter, the client's shard), and a class's prototype is pooled, counts-weighted, with the clients the
    # method averaged any layer with in the last round (fedproto always pools with everyone)
    lam: float = 0.5  # regulariser weight λ
    regularizer: str = ""  # "" = the local method's default
    l1_reduction: str = ""  # l1-grad's L1 over a layer: "" = the learner's default (sum, as in the paper) | sum | mean
    lcb_c: float = 2.0  # exploration constant c of every LCB: the server's bandits, the client's probe and learner
    train_per_class: int = 64  # training examples per class before sharding
    test_per_class: int = 16
    seed: int = 0
    sketch_dim: int = 256  # s, coordinates per layer sketch
    sketch_kind: str = "cauchy"  # cauchy (L1) | gaussian (L2)
    tree_signature: str = "probe-grad"  # what leaves are placed by: live (the running signature at the client's own
    # adapter) | probe-grad | probe-fisher (the task's gradient / diagonal Fisher at the shared reference adapter) |
    # probe-input (each LoRA layer's mean input there: label-free, places tasks by their inputs) | probe-input-grad
    # (both, each half at unit L1 norm: related inputs come near, same inputs with other labels still separate)
    probe_batches: int = 4  # mini-batches of a shared-probe signature
    probe_norm: str = "l1"  # a shared-probe signature's layers before release: l1 (each scaled to unit L1 norm: the
    # tree compares directions, not magnitudes; treelora.probe.normalise_layers) | none (as measured)
    sketch_seed: int = 1234  # shared by every node: the same seed gives the same sketch matrices
    wire_dtype: str = "bfloat16"  # adapters on the wire; sketches always float32
    candidates_per_layer: int = 1  # candidate leaves the server sends per layer per round
    clusters: int = 2  # clustered-fl: number of client clusters
    share_layers: bool = True  # treelora: layer-wise aggregation among clients sharing a tree node
    share_groups: str = "running"  # treelora: which tree's nodes group the clients: running (a tree the server builds
    # each round over the reporting clients' current sketches; layers below a client's deepest shared node share in
    # it: server.sharing_groups) | route (the node at each layer's depth that the current sketch routes to in the
    # global tree of finished leaves: the paper's layer-l-within-its-depth-l-subtree)
    warm_start: bool = True  # treelora: warm-start a new task from the nearest leaf's adapter
    leaf_size: int = 1  # tasks per tree leaf (the server's tree and the clients')
    tree_split: str = "bisect-linkage"  # the server's tree split (treelora.tree_splits, tree_linkage):
    # bisect-linkage | bisect | average-linkage | l1-median (paper) | dot-consecutive (released); the clients' own
    # trees follow their learner method's preset
    tree_estimator: str = "geomean"  # server: the sketch L1 estimator its tree measures with: geomean (Li's
    # geometric mean: the accuracy of the median, no sort) | median (Indyk's, as the clients measure)
    candidate_rule: str = "nearest"  # treelora: how a client's per-layer candidates are chosen: nearest (the leaves
    # of other clients nearest its current sketch, by routing) | lcb (the paper's per-client LCB bandit descent)
    rebuild_below: int = 64  # server: leaves up to which the tree is rebuilt at every insert (a UPGMA build costs
    # O(n² · L) sketch distances, so this stays small)
    rebuild_every: int = 4  # inserts between tree rebuilds (clients; the server's minimum)
    rebuild_growth: float = 0.25  # server: also wait until the tree grew by this fraction since its last rebuild
    eval_every: int = 0  # rounds between global evaluations (0 = only at the end)
    out_dir: str = "runs/federated"
    state_dir: str = ""  # client state root ("" = <out-dir>/clients)
    resume: bool = False
    timeout_s: float = 0.0  # per-round reply timeout in seconds (0 = wait for all)
    allow_rebind: bool = False  # server: a known client may report from a new node id once its old node left
    dp_clip: float = 0.0  # L2 clip of a signature release before sketching (0 = no DP on sketches)
    dp_noise: float = 0.0  # Gaussian noise multiplier σ/clip of a sketch release
    dp_adapter_clip: float = 0.0  # L2 clip of a round's adapter update (0 = no DP on adapters)
    dp_adapter_noise: float = 0.0  # Gaussian noise multiplier of an adapter-update release
    dp_delta: float = 1e-5  # δ at which ε is reported
    threads: int = 0  # torch threads per client process (0 = leave)

    def __post_init__(self) -> None:
        fed_method(self.method)
        for name in ("tasks_per_client", "rounds_per_task", "local_steps", "batch_size", "sketch_dim",
                     "candidates_per_layer", "leaf_size", "rebuild_every", "clusters", "probe_batches"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        for name in ("dp_clip", "dp_noise", "dp_adapter_clip", "dp_adapter_noise", "rebuild_growth", "lcb_c",
                     "rebuild_below"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if (self.dp_clip > 0) != (self.dp_noise > 0) or (self.dp_adapter_clip > 0) != (self.dp_adapter_noise > 0):
            raise ValueError("differential privacy needs both a clip and a noise multiplier (or neither)")
        if (self.dp_noise > 0 or self.dp_adapter_noise > 0) and self.fed_method.dp_unsupported:
            raise ValueError(f"method={self.method}: {self.fed_method.dp_unsupported}")
        if not 0 < self.dp_delta < 1:
            raise ValueError(f"dp-delta must be in (0, 1), got {self.dp_delta}")
        if self.l1_reduction and self.l1_reduction not in L1_REDUCTIONS:
            raise ValueError(f"l1-reduction must be {' or '.join(L1_REDUCTIONS)} (or empty), got {self.l1_reduction!r}")
        if self.sketch_kind not in ("cauchy", "gaussian"):
            raise ValueError(f"sketch-kind must be cauchy or gaussian, got {self.sketch_kind!r}")
        if self.wire_dtype not in ("float32", "float16", "bfloat16"):
            raise ValueError(f"wire-dtype must be float32, float16 or bfloat16, got {self.wire_dtype!r}")
        if self.probe_norm not in PROBE_NORMS:
            raise ValueError(f"probe-norm must be one of {', '.join(PROBE_NORMS)}, got {self.probe_norm!r}")
        if self.tree_signature not in TREE_SIGNATURES:
            raise ValueError(f"tree-signature must be one of {', '.join(TREE_SIGNATURES)}, got {self.tree_signature!r}")
        if self.share_groups not in SHARE_GROUPS:
            raise ValueError(f"share-groups must be one of {', '.join(SHARE_GROUPS)}, got {self.share_groups!r}")
        if self.candidate_rule not in CANDIDATE_RULES:
            raise ValueError(f"candidate-rule must be one of {', '.join(CANDIDATE_RULES)}, got {self.candidate_rule!r}")
        if self.tree_split not in SPLIT_REGISTRY:
            raise ValueError(f"tree-split must be one of {', '.join(SPLIT_REGISTRY)}, got {self.tree_split!r}")
        if self.head not in HEAD_REGISTRY:
            raise ValueError(f"head must be one of {', '.join(HEAD_REGISTRY)}, got {self.head!r}")
        if self.share_prototypes:
            if self.fed_method.sends_prototypes:
                raise ValueError(f"method={self.method} always pools its prototypes; share-prototypes is for the "
                                 f"adapter-sharing methods")
            if self.head != "ncm":
                raise ValueError(f"share-prototypes pools the ncm head's class means; it needs head=ncm, got "
                                 f"head={self.head}")
            if self.dp_noise > 0 or self.dp_adapter_noise > 0:
                raise ValueError("share-prototypes releases per-class feature sums and counts, which no DP knob "
                                 "clips or noises; run it without DP")
        imposed = self.fed_method.learner_overrides.get("head")
        if imposed is not None and self.head not in ("linear", imposed):
            raise ValueError(f"method={self.method} scores with head={imposed}; head={self.head} does not apply")
        if self.tree_estimator not in L1_ESTIMATORS:
            raise ValueError(f"tree-estimator must be one of {', '.join(L1_ESTIMATORS)}, got {self.tree_estimator!r}")
        if self.scenario not in SCENARIOS:
            raise ValueError(f"scenario must be one of {', '.join(SCENARIOS)}, got {self.scenario!r}")
        if self.scenario == "conflicting" and self.families < 2:
            raise ValueError(f"scenario=conflicting needs families >= 2 (one family has nobody to conflict with), "
                             f"got families={self.families}")

    # ------------------------------------------------------------------ derived
    @property
    def fed_method(self) -> type[FedMethod]:
        """The federated method's contract (what clients train and send)."""
        return fed_method(self.method)

    @property
    def learner_method(self) -> str:
        """The continual learner each client runs."""
        return self.fed_method.learner_method(self.local_method)

    @property
    def sends_prototypes(self) -> bool:
        """Whether every train report carries per-class feature sums and counts (``fedproto``, or
        ``share-prototypes``)."""
        return self.fed_method.sends_prototypes or self.share_prototypes

    def load_stream(self) -> Any:
        """The run's task stream as its scenario's clients see it (:func:`treelora.fed.scenarios.scenario_stream`):
        the same on every node, a function of the run config alone."""
        from ..streams import load_stream
        from .scenarios import scenario_stream

        stream = load_stream(self.stream, seed=self.seed, train_per_class=self.train_per_class,
                             test_per_class=self.test_per_class)
        return scenario_stream(stream, self.scenario, self.families)

    def max_rounds(self) -> int:
        """Rounds the server plays: ``num-rounds``, or as many as one client's whole schedule."""
        return self.num_rounds or self.tasks_per_client * self.rounds_per_task

    def learner_config(self, *, device: str | None = None, precision: str = "auto") -> LearnerConfig:
        """The client's learner config: the learner method's preset with every shared field passed on."""
        overrides: dict[str, Any] = {k: v for k, v in asdict(self).items()
                                     if k in LEARNER_KEYS and not (isinstance(v, str) and v == "")}
        overrides.update(self.fed_method.learner_overrides)
        return make_config(self.learner_method, **overrides, progress=False, device=device, precision=precision)

    # ------------------------------------------------------------------ parsing
    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any]) -> FedSettings:
        """Parse kebab-case keys typed by their field (:func:`treelora.overrides.coerce`); an unknown key or a
        value of the wrong type is a ValueError naming it (and, for a key, the known ones)."""
        try:
            values = coerce(cls, run_config, kebab=True)
        except ValueError as exc:
            raise ValueError(f"run config: {exc}") from None
        return cls(**values)

    def to_run_config(self) -> dict[str, Any]:
        """The kebab-case run config these settings come from (every key)."""
        return {k.replace("_", "-"): v for k, v in asdict(self).items()}


LEARNER_KEYS = frozenset(f.name for f in fields(FedSettings)) & frozenset(f.name for f in config_fields()) \
    - NOT_PASSED_TO_LEARNER
