"""The federated methods' server side, one class per method, registered under the method's name.

As in Flower's ``Strategy``, a strategy decides what each client is told (:meth:`Strategy.configure_train`), what
a validated report changes (:meth:`Strategy.ingest_train`), how adapters are combined
(:meth:`Strategy.aggregate_train`) and what evaluation asks and collects (:meth:`Strategy.configure_evaluate`,
:meth:`Strategy.aggregate_evaluate`). What is common — the envelope of every message, shares, validation, client
book-keeping, checkpoint — lives in :class:`server.state.GlobalState`, which calls these hooks. What clients of a
method send is the shared contract :class:`treelora.fed.methods.FedMethod` of the same name.

* :class:`TreeLoRAFed`: the global tree over finished leaves (:class:`server.global_tree.GlobalTree`); per layer
  the candidate leaves are, by ``candidate-rule``, the other clients' leaves nearest the client's current sketch
  (``nearest``, the default) or the picks of the client's LCB bandit descending the tree (``lcb``, the paper's
  rule; reset when the client starts a task); never the client's own leaves. Sharing groups (``share-groups``):
  by default the nodes of a tree the server builds each round over the reporting clients' current sketches
  (:mod:`server.sharing_groups`); with ``route``, the global tree's node at each layer's depth that the client's
  current sketch routes to (before any leaf every client sits in the root, so only layer 0 is shared; a client
  keeps its place between tasks: its finished leaf, then its new task's warm-start probe). Warm starts from the
  other clients' leaf nearest to a probe of the new task.
* :class:`FedAvgLoRA`: every layer averaged over every client.
* :class:`LocalOnly`: nothing shared.
* FedSA-LoRA, FFA-LoRA, clustered FL and the sharing oracle (below), and the prototype baseline ``fedproto``
  (:mod:`server.proto_strategy`, registered in the same registry).
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from protos import treelora_fed_pb2 as pb
from protos.wire import (
    ProtocolError,
    ReportExpectation,
    cand_name,
    is_done_report,
    parse_report,
    sketch_name,
    validate_done,
    validate_probe,
    warm_name,
)
from treelora.bandit import TreeLCBBandit
from treelora.fed.keys import owns, task_key
from treelora.fed.methods import FedMethod, fed_method
from treelora.fed.settings import FedSettings
from treelora.registry import Registry

from .aggregation import Adapter
from .global_tree import GlobalTree
from .leaf_store import LeafStore
from .prototype_pool import PrototypePool
from .sharing_groups import running_groups

if TYPE_CHECKING:
    from .state import ClientInfo, GlobalState

__all__ = ["Strategy", "TreeLoRAFed", "FedAvgLoRA", "LocalOnly", "STRATEGY_REGISTRY", "make_strategy"]

STRATEGY_REGISTRY: Registry[type[Strategy]] = Registry("federated strategy")


class Strategy:
    """Base: no tree, no candidates, no warm start; evaluation asks every client for its scores."""

    name: ClassVar[str] = ""
    share_parts: ClassVar[tuple[str, ...]] = ("A", "B")  # the adapter matrices averaged within a group

    def __init__(self, fed: FedSettings, out_dir: Path) -> None:
        self.fed = fed
        self.method: type[FedMethod] = fed_method(self.name)
        # per-class feature statistics, for the methods whose clients send them (fedproto, share-prototypes)
        self.pool: PrototypePool | None = PrototypePool(fed) if fed.sends_prototypes else None
        self.partners: dict[str, list[str]] = {}  # client → the clients it shared a layer with in the last round

    @property
    def feature_dim(self) -> int | None:
        """The prototype statistics' feature width (None until the first report, or without a pool)."""
        return None if self.pool is None else self.pool.feature_dim

    def start(self, state: GlobalState, num_clients: int) -> None:
        """The loop is about to play its first round (also after a resume) with ``num_clients`` clients."""
        if self.pool is not None:
            self.pool.start(num_clients)

    def expected_prototypes(self, state: GlobalState, report: pb.ClientReport) -> Mapping[int, int] | None:
        """``{class: most examples}`` whose ``proto.<c>.sum/count`` this train report must carry (None: none)."""
        return None if self.pool is None else self.pool.expected(report)

    def prototype_partners(self, state: GlobalState, client: str) -> set[str] | None:
        """The clients whose class statistics ``client``'s prototypes pool (None: every client): itself and the
        clients it averaged its last layer with in the last aggregation (``share-prototypes``): the head reads the
        last layer's features, so it shares where that layer shares."""
        return {client, *self.partners.get(client, ())}

    def prototype_tensors(self, state: GlobalState, client: str, rnd: int) -> dict[str, torch.Tensor]:
        """The pooled ``proto.<c>.mean`` a train assignment carries (none without a pool)."""
        if self.pool is None or client not in state.clients:
            return {}
        return self.pool.tensors_for(client, rnd, self.prototype_partners(state, client))

    # ------------------------------------------------------------------ train
    def configure_train(self, state: GlobalState, client: str, info: ClientInfo | None, rnd: int
                        ) -> tuple[list[pb.LayerAssignment], dict[str, torch.Tensor], str]:
        """This client's per-layer candidates, their tensors and a warm-start leaf (with its tensors)."""
        return [], {}, ""

    def _nearest_candidates(self, client: str, sketch: list[torch.Tensor] | None) -> list[str] | None:
        """``candidate-rule = nearest``: the ``candidates-per-layer`` leaves of other clients nearest the client's
        current sketch (one routed descent, :meth:`GlobalTree.nearest_leaves`), the same for every layer; None
        without a sketch (then the LCB bandit picks)."""
        if sketch is None:
            return None
        return self.index.nearest_leaves(sketch, self.fed.candidates_per_layer, where=lambda k: not owns(client, k))

    def warm_tensors(self, leaf: str, num_layers: int) -> dict[str, torch.Tensor]:
        """The tensors that warm-start a task from ``leaf``."""
        raise NotImplementedError(f"{self.name} has no warm starts")

    def wants_probe(self, state: GlobalState, info: ClientInfo | None) -> bool:
        """Whether to probe this client (``query``) before its next task starts."""
        return False

    def ingest_probe(self, state: GlobalState, client: str, rnd: int, control: bytes,
                     arrays: dict[str, Any]) -> str:
        """A probe reply: the warm-start leaf chosen for the client ("" for none)."""
        return ""

    def known_leaves(self) -> AbstractSet[str]:
        """Leaf keys a report's pulls may name."""
        return frozenset()

    def ingest_train(self, state: GlobalState, report: pb.ClientReport, tensors: dict[str, torch.Tensor],
                     info: ClientInfo) -> None:
        """What a validated train report changes beyond the common book-keeping."""

    def group_ids(self, state: GlobalState, client: str) -> list[str]:
        """Per layer (0, 1, ...), the id of the group the client's layer is averaged in; shorter = personal."""
        return []

    def groups(self, state: GlobalState, adapters: dict[str, tuple[Adapter, int]]) -> dict[tuple[int, str], list[str]]:
        """(layer, group id) → clients, from each client's :meth:`group_ids`."""
        groups: dict[tuple[int, str], list[str]] = {}
        for client in adapters:
            for layer, gid in enumerate(self.group_ids(state, client)[: state.num_layers]):
                groups.setdefault((layer, gid), []).append(client)
        return groups

    def aggregate_train(self, state: GlobalState, adapters: dict[str, tuple[Adapter, int]]
                        ) -> dict[tuple[int, str], list[str]]:
        """The averaging groups of this round's adapters (recorded for the tree-quality figures)."""
        groups = self.groups(state, adapters)
        state.audit.record_groups(state.round + 1, groups)
        partners: dict[str, set[str]] = {}
        for (layer, _), members in groups.items():
            if layer == state.num_layers - 1 and len(members) > 1:
                for c in members:
                    partners.setdefault(c, set()).update(m for m in members if m != c)
        self.partners = {c: sorted(p) for c, p in sorted(partners.items())}
        return groups

    # ------------------------------------------------------------------ evaluate
    def configure_evaluate(self, state: GlobalState, client: str) -> pb.Assignment:
        """The tensor-free ``evaluate`` message."""
        return state.control(client, state.round)

    def aggregate_evaluate(self, state: GlobalState, scores: dict[str, dict[str, float]]) -> dict[str, Any]:
        """Every client's scores on its finished tasks and their mean."""
        accs = [a for s in scores.values() for a in s.values()]
        return {"round": state.round, "per_client": scores, "mean_accuracy": sum(accs) / len(accs) if accs else None}

    # ------------------------------------------------------------------ checkpoint and results
    def state_dict(self) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
        """(torch-saved part, JSON part, leaf records) of this strategy's state."""
        return {}, {}, []

    def after_checkpoint(self) -> None:
        """The checkpoint written from the last :meth:`state_dict` is durable (files it no longer uses may go)."""

    def load_state_dict(self, blob: dict[str, Any], meta: dict[str, Any], leaves: list[dict[str, Any]],
                        num_layers: int) -> None:
        """Inverse of :meth:`state_dict`."""

    def results(self) -> dict[str, Any]:
        """Method-specific entries of results.json."""
        return {"leaves": [], "tree": None}


@STRATEGY_REGISTRY.register("treelora")
class TreeLoRAFed(Strategy):
    """TreeLoRA-Fed (see the module docstring)."""

    def __init__(self, fed: FedSettings, out_dir: Path) -> None:
        super().__init__(fed, out_dir)
        self.index = GlobalTree(fed, centre_dir=Path(out_dir) / "tree_centres")
        self.leaves = LeafStore(Path(out_dir) / "leaves")
        self.bandits: dict[str, TreeLCBBandit] = {}
        self.sketches: dict[str, list[torch.Tensor]] = {}  # client → latest current-task sketch
        self.warm: dict[str, str] = {}  # client → warm-start leaf for its next task
        self._paths: dict[str, tuple[Any, Any, int, list[Any]]] = {}  # client → (sketch, tree, version, path)
        self._placed: dict[str, list[tuple[str, int]]] = {}  # running groups: client → per layer (node, size)

    @property
    def tree(self) -> Any:
        return self.index.tree

    def _path(self, client: str, sketch: list[torch.Tensor]) -> list[Any]:
        """The tree path of the client's current sketch. The aggregation that ends a round locates every client,
        and the next round's assignment asks for the same sketch in the same tree: the path is kept until the
        sketch object or the tree changes."""
        tree = self.index.tree
        hit = self._paths.get(client)
        if hit is not None and hit[0] is sketch and hit[1] is tree and tree is not None and hit[2] == tree.version:
            return hit[3]
        path = self.index.locate(sketch)
        self._paths[client] = (sketch, tree, -1 if tree is None else tree.version, path)
        return path

    def _bandit(self, client: str, num_layers: int) -> TreeLCBBandit:
        if client not in self.bandits:
            self.bandits[client] = TreeLCBBandit(self.index.ensure(num_layers), c=self.fed.lcb_c, seed=self.fed.seed)
        return self.bandits[client]

    def configure_train(self, state: GlobalState, client: str, info: ClientInfo | None, rnd: int
                        ) -> tuple[list[pb.LayerAssignment], dict[str, torch.Tensor], str]:
        layers: list[pb.LayerAssignment] = []
        tensors: dict[str, torch.Tensor] = {}
        tree = self.index.tree
        if info is not None and tree is not None and len(tree) > 0:
            if info.finished_last:
                self.bandits.pop(client, None)  # a new task: statistics start afresh
            bandit = self._bandit(client, state.num_layers)
            info.bandit_t += 1
            sketch = self.sketches.get(client)
            running = self.fed.share_groups == "running"
            path = self._path(client, sketch) if sketch is not None and not running else []
            placed = self._placed.get(client, []) if running else []
            nearest = self._nearest_candidates(client, sketch) if self.fed.candidate_rule == "nearest" else None
            for layer in range(state.num_layers):
                chosen: list[str] = []
                for _ in range(self.fed.candidates_per_layer):
                    if nearest is not None:
                        leaf = nearest[len(chosen)] if len(chosen) < len(nearest) else None
                    else:
                        leaf = bandit.select(layer, info.bandit_t, lambda k: not owns(client, k) and k not in chosen)
                    if leaf is None:
                        break
                    chosen.append(leaf)
                    tensors[cand_name(leaf, layer)] = tree.entries[leaf].signature[layer]
                if running:  # the client's node in the last aggregation's tree of running sketches
                    gid, size = placed[layer] if layer < len(placed) else ("", 0)
                else:
                    node = path[min(layer, len(path) - 1)] if path else None
                    gid, size = (node.path, len(node.keys)) if node else ("", 0)
                layers.append(pb.LayerAssignment(layer=layer, candidates=chosen, group_node=gid, group_size=size))
            state.audit.record_candidates(client, rnd, [list(la.candidates) for la in layers], tree.entries)
        warm_leaf = self.warm.pop(client, "") if info is not None and info.finished_last else ""
        return layers, tensors, warm_leaf

    def warm_tensors(self, leaf: str, num_layers: int) -> dict[str, torch.Tensor]:
        """The warm-start leaf's adapter as ``warm.<l>.A/B`` tensors."""
        adapter = self.leaves.adapter(leaf)
        return {warm_name(l, p): adapter[f"{l}.{p}"] for l in range(num_layers) for p in ("A", "B")}

    def wants_probe(self, state: GlobalState, info: ClientInfo | None) -> bool:
        return (self.fed.warm_start and info is not None and info.finished_last and not info.done
                and len(self.index) > 0)

    def ingest_probe(self, state: GlobalState, client: str, rnd: int, control: bytes,
                     arrays: dict[str, Any]) -> str:
        report = parse_report(control)
        info = state.clients.get(client)
        if info is None or report.client_id != client:
            raise ProtocolError("bad-identity", f"probe from {report.client_id!r}, expected {client!r}")
        batch = self.fed.batch_size * (self.fed.probe_batches if self.fed.tree_signature != "live" else 1)
        expect = ReportExpectation(round=rnd, client_id=client, batch_size=batch)
        if is_done_report(report):
            validate_done(report, arrays, expect=expect)
            return ""
        tensors = validate_probe(report, arrays, num_layers=state.num_layers, sketch_dim=self.fed.sketch_dim,
                                 expect=expect)
        if report.task_key != task_key(client, report.task_index) or report.task_index <= info.task_index:
            raise ProtocolError("bad-value", f"probe of task {report.task_key!r}: not {client!r}'s next task")
        state.privacy.record(client, sketches=1, adapters=0)  # the probe is a release too
        if len(self.index) == 0:
            return ""
        probe = [tensors[sketch_name(l)] for l in range(state.num_layers)]
        if self.fed.tree_signature != "live":  # the new task's own signature: the client's place from now on
            self.sketches[client] = probe
        best = self.index.nearest_leaf(probe, where=lambda k: not owns(client, k)) or self.index.nearest_leaf(probe)
        assert best is not None
        self.warm[client] = best
        state.audit.record_warm(client, report.task_key, best, self.index.keys())
        return best

    def known_leaves(self) -> AbstractSet[str]:
        return self.index.keys()

    def ingest_train(self, state: GlobalState, report: pb.ClientReport, tensors: dict[str, torch.Tensor],
                     info: ClientInfo) -> None:
        L = state.num_layers
        if report.pulls and self.index.tree is not None:
            bandit = self._bandit(report.client_id, L)
            for pull in report.pulls:
                bandit.update(pull.layer, pull.leaf, pull.xi_sum / pull.count, max(info.bandit_t, 1), pull.count)
        self.sketches[report.client_id] = [tensors[sketch_name(l)] for l in range(L)]
        if report.task_finished:
            final = [tensors[f"final.{l}"] for l in range(L)]
            adapter = {l: {p: tensors[f"adapter.{l}.{p}"] for p in ("A", "B")} for l in range(L)}
            self.leaves.write(report.task_key, report.client_id, int(report.task_index), int(report.num_examples),
                              adapter, final)
            self.index.add(report.task_key, final, weight=float(report.num_examples))
            self.sketches[report.client_id] = final  # the client keeps its place (its leaf) until its next task

    def groups(self, state: GlobalState, adapters: dict[str, tuple[Adapter, int]]) -> dict[tuple[int, str], list[str]]:
        if not self.fed.share_layers or self.fed.share_groups == "route":
            return super().groups(state, adapters)
        groups = running_groups({c: self.sketches[c] for c in adapters if c in self.sketches}, state.num_layers,
                                split=self.fed.tree_split, distance_fn=self.index.distance)
        self._placed = {}
        for (_layer, gid), members in sorted(groups.items()):  # layer order: one entry per layer
            for c in members:
                self._placed.setdefault(c, []).append((gid, len(members)))
        return groups

    def group_ids(self, state: GlobalState, client: str) -> list[str]:
        """``share-groups=route``: the path the client's current sketch takes in the global tree."""
        if not self.fed.share_layers:
            return []
        sketch = self.sketches.get(client)
        if len(self.index) == 0 or sketch is None:
            return [""]
        return [n.path for n in self._path(client, sketch)]

    def state_dict(self) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
        tree, counters = self.index.state(set(self.leaves.records))
        meta = {"bandits": {c: b.state() for c, b in self.bandits.items()}, "warm": self.warm, **counters}
        return {"tree": tree, "sketches": self.sketches}, meta, list(self.leaves.records.values())

    def after_checkpoint(self) -> None:
        self.index.after_checkpoint()

    def load_state_dict(self, blob: dict[str, Any], meta: dict[str, Any], leaves: list[dict[str, Any]],
                        num_layers: int) -> None:
        self.leaves.records = {r["key"]: r for r in leaves}
        self.index.load(blob["tree"], meta, lambda key: self.leaves.sketch(key, num_layers))
        self.sketches = blob["sketches"]
        for c, b in meta["bandits"].items():
            self._bandit(c, num_layers).load_state(b)
        self.warm = meta["warm"]

    def results(self) -> dict[str, Any]:
        return {"leaves": list(self.leaves.records), "tree": self.index.render()}


@STRATEGY_REGISTRY.register("fedavg-lora")
class FedAvgLoRA(Strategy):
    """FedAvg-LoRA: every layer averaged over every client that reported this round."""

    def group_ids(self, state: GlobalState, client: str) -> list[str]:
        return ["*"] * state.num_layers


@STRATEGY_REGISTRY.register("fedsa-lora")
class FedSALoRA(Strategy):
    """FedSA-LoRA: every layer's A averaged over every client; B stays personal."""

    share_parts = ("A",)

    def group_ids(self, state: GlobalState, client: str) -> list[str]:
        return ["*"] * state.num_layers


@STRATEGY_REGISTRY.register("ffa-lora")
class FFALoRA(Strategy):
    """FFA-LoRA: A frozen on every client at the shared seed; every layer's B averaged over every client."""

    share_parts = ("B",)

    def group_ids(self, state: GlobalState, client: str) -> list[str]:
        return ["*"] * state.num_layers


@STRATEGY_REGISTRY.register("clustered-fl")
class ClusteredFL(Strategy):
    """Clustered FL: each round the clients are split into ``clusters`` groups by k-means on the cosine of their
    whole adapters (seeded, deterministic), and every layer is averaged within its group."""

    def groups(self, state: GlobalState, adapters: dict[str, tuple[Adapter, int]]) -> dict[tuple[int, str], list[str]]:
        clients = sorted(adapters)
        vecs = torch.stack([torch.cat([t.flatten() for ab in adapters[c][0].values() for t in ab.values()])
                            for c in clients])
        labels = cosine_kmeans(vecs, min(self.fed.clusters, len(clients)), seed=self.fed.seed + state.round)
        return {(layer, f"k{k}"): [c for c, lab in zip(clients, labels) if lab == k]
                for layer in range(state.num_layers) for k in sorted(set(labels))}


@STRATEGY_REGISTRY.register("oracle-sharing")
class OracleSharing(Strategy):
    """The sharing upper bound: every layer averaged among the clients whose current tasks are the same stream task
    (from the scenario's ground truth, :mod:`server.tree_audit`)."""

    def group_ids(self, state: GlobalState, client: str) -> list[str]:
        task = state.audit.current_task(client, state.round + 1)
        return [] if task is None else [task] * state.num_layers


def cosine_kmeans(x: torch.Tensor, k: int, *, seed: int, iterations: int = 20) -> list[int]:
    """Cluster labels of the rows of ``x`` by k-means on the unit sphere (k-means++ start, seeded)."""
    x = torch.nn.functional.normalize(x.double(), dim=1)
    g = torch.Generator().manual_seed(seed)
    centres = [x[int(torch.randint(len(x), (1,), generator=g))]]
    while len(centres) < k:
        d = torch.stack([1 - x @ c for c in centres]).min(dim=0).values.clamp(min=0)
        pick = int(torch.multinomial(d + 1e-12, 1, generator=g)) if float(d.sum()) > 0 else len(centres)
        centres.append(x[pick])
    c = torch.stack(centres)
    labels = (x @ c.T).argmax(dim=1)
    for _ in range(iterations):
        new = torch.stack([torch.nn.functional.normalize(x[labels == j].sum(0), dim=0) if (labels == j).any()
                           else c[j] for j in range(k)])
        new_labels = (x @ new.T).argmax(dim=1)
        c = new
        if torch.equal(new_labels, labels):
            break
        labels = new_labels
    return [int(v) for v in labels]


@STRATEGY_REGISTRY.register("local-only")
class LocalOnly(Strategy):
    """No sharing at all; reports carry counts and metrics only."""


from . import proto_strategy as _proto_strategy  # noqa: E402,F401 - registers fedproto in STRATEGY_REGISTRY


def make_strategy(fed: FedSettings, out_dir: Path) -> Strategy:
    """The strategy of the run config's method."""
    return STRATEGY_REGISTRY.get(fed.method)(fed, out_dir)
