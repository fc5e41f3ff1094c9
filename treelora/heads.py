"""Class-incremental heads as variants registered in :data:`HEAD_REGISTRY` under the config's ``head`` name.

Every method trains the same linear head over all classes (logits masked to the current task's classes while
training); the variant decides what scores a test example at inference and what happens to the head when a task
ends (DESIGN.md §2 "Heads"):

* ``linear`` (default, today's behaviour): the trained linear head scores.
* ``ncm``: nearest class mean, cosine (SimpleCIL / ADAM, Zhou et al. 2023): after each task the mean feature of
  each of its classes (live adapter, eval mode, the task's training split) is stored as that class's prototype,
  and a test example is scored by its cosine to every prototype. The linear head still trains the adapter.
* ``slca``: classifier alignment (SLCA, Zhang et al. 2023): after each task each of its classes' feature mean and
  covariance are stored, and the linear head is refit over every seen class on features sampled from those
  Gaussians (``head_samples`` per class, ``head_refit_epochs`` of SGD at ``head_refit_lr``), so that old and new
  classes' rows are fit together instead of the new rows alone.

``ncm`` and ``slca`` need the task's training split when it closes (``end_task(train)``; ``train_task`` passes it,
and so does the federated client, with its own shard: the statistics stay on the client — ``fedproto``, whose
contract sends per-class sums, aside).

A prototype or a Gaussian is computed once, with the adapter of its own task; later adapters move the features
of old classes away from them (the drift the papers avoid by freezing the backbone after the first task).

:func:`reset_head_moments` zeroes Adam's running moments of a finished task's head rows: their gradient is
exactly 0 afterwards (their logits are masked out of every later task's loss), but without the reset Adam's
momentum keeps moving them for tens of steps (``head_moment_reset``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from .registry import Registry
from .task_model import masked_logits

if TYPE_CHECKING:
    from .config import LearnerConfig

__all__ = ["Head", "HEAD_REGISTRY", "make_head", "reset_head_moments", "class_statistics"]


class Head:
    """The ``linear`` head (the trained linear layer scores) and the base of the others."""

    name: ClassVar[str] = ""
    needs_features: ClassVar[bool] = False  # end_task needs the task's training features

    def __init__(self, config: LearnerConfig, model: nn.Module) -> None:
        self.cfg = config
        self.model = model

    def logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Scores of every class for a batch (float32, ``(N, num_classes)``)."""
        return self.model(batch).float()

    def predict(self, batch: dict[str, torch.Tensor], classes: torch.Tensor) -> torch.Tensor:
        """Predicted global class ids, argmax over ``classes`` (the model's own ``predict`` for ``linear``)."""
        return self.model.predict(batch, classes)

    @torch.no_grad()
    def finish_task(self, learner: Any, train: dict[str, torch.Tensor] | None, classes: list[int]) -> None:
        """The learner's task over ``classes`` closes: compute the training split's features (eval mode, the
        final adapter) when this head needs them and pass them to :meth:`end_task`."""
        if not self.needs_features:
            return
        if train is None:
            raise ValueError(f"head={self.cfg.head!r} needs the task's training split: end_task(train=...)")
        from .data import iterate_batches

        was_training = self.model.training
        self.model.eval()
        try:
            with learner._autocast():
                batches = (learner._to_device(b) for b in iterate_batches(train, self.cfg.eval_batch_size,
                                                                          shuffle=False))
                feats, labels = collect_features(self.model.features, batches)
            self.end_task(feats, labels, classes, list(learner.seen_classes))
        finally:
            self.model.train(was_training)

    def end_task(self, features: torch.Tensor, labels: torch.Tensor, classes: list[int], seen: list[int]) -> None:
        """A task over ``classes`` ended (``features``/``labels``: its training split, for heads that
        :attr:`needs_features`); ``seen`` are all classes seen so far."""

    def state_dict(self) -> dict[str, Any]:
        """This head's own state (CPU tensors)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""


HEAD_REGISTRY: Registry[type[Head]] = Registry("head")
HEAD_REGISTRY.register("linear")(Head)


def class_statistics(features: torch.Tensor, labels: torch.Tensor, classes: list[int]) -> dict[int, torch.Tensor]:
    """Mean feature per class (float64 accumulation, float32 result)."""
    return {c: features[labels == c].double().mean(dim=0).float() for c in classes if bool((labels == c).any())}


@HEAD_REGISTRY.register("ncm")
class NCMHead(Head):
    """Nearest class mean, cosine: one prototype per seen class."""

    needs_features = True

    def __init__(self, config: LearnerConfig, model: nn.Module) -> None:
        super().__init__(config, model)
        self.prototypes: torch.Tensor | None = None  # (num_classes, d); zero rows for classes without one

    def end_task(self, features: torch.Tensor, labels: torch.Tensor, classes: list[int], seen: list[int]) -> None:
        n, d = self.model.head.weight.shape
        if self.prototypes is None:
            self.prototypes = torch.zeros(n, d, device=features.device)
        for c, mean in class_statistics(features, labels, classes).items():
            self.prototypes[c] = mean.to(self.prototypes.device)

    def logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        feats = self.model.features(batch).float()
        if self.prototypes is None:
            return torch.zeros(feats.shape[0], self.model.head.weight.shape[0], device=feats.device)
        protos = nn.functional.normalize(self.prototypes.to(feats.device), dim=-1)
        return nn.functional.normalize(feats, dim=-1) @ protos.T  # a class without a prototype scores 0

    def predict(self, batch: dict[str, torch.Tensor], classes: torch.Tensor) -> torch.Tensor:
        return masked_logits(self.logits(batch), classes).argmax(dim=-1)

    def state_dict(self) -> dict[str, Any]:
        return {"prototypes": None if self.prototypes is None else self.prototypes.detach().cpu().clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        p = state.get("prototypes")
        self.prototypes = None if p is None else p.to(self.model.head.weight.device)


@HEAD_REGISTRY.register("slca")
class SLCAHead(Head):
    """Classifier alignment: per-class Gaussian feature statistics, head refit on samples after each task."""

    needs_features = True

    def __init__(self, config: LearnerConfig, model: nn.Module) -> None:
        super().__init__(config, model)
        self.means: dict[int, torch.Tensor] = {}
        self.covs: dict[int, torch.Tensor] = {}

    def end_task(self, features: torch.Tensor, labels: torch.Tensor, classes: list[int], seen: list[int]) -> None:
        for c, mean in class_statistics(features, labels, classes).items():
            x = features[labels == c].double()
            cov = torch.cov(x.T) if x.shape[0] > 1 else torch.zeros(x.shape[1], x.shape[1], dtype=x.dtype)
            self.means[c], self.covs[c] = mean.cpu(), cov.float().cpu()
        self.refit(seen)

    def _samples(self, seen: list[int], generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = [], []
        k = self.cfg.head_samples
        for c in seen:
            if c not in self.means:
                continue
            cov = self.covs[c].double()
            ridge = 1e-2 * float(cov.diagonal().mean().clamp(min=1e-8))  # shrinkage: cov has rank < d
            chol = torch.linalg.cholesky(cov + ridge * torch.eye(cov.shape[0], dtype=cov.dtype))
            z = torch.randn(k, cov.shape[0], generator=generator, dtype=cov.dtype)
            xs.append((self.means[c].double() + z @ chol.T).float())
            ys.append(torch.full((k,), c, dtype=torch.long))
        return torch.cat(xs), torch.cat(ys)

    def refit(self, seen: list[int]) -> None:
        """Refit the linear head over ``seen`` on sampled features (SGD, momentum 0.9, batches of 256)."""
        head = self.model.head
        generator = torch.Generator().manual_seed(self.cfg.seed + len(self.means))
        x, y = self._samples(seen, generator)
        device = head.weight.device
        x, y = x.to(device), y.to(device)
        mask = torch.full((head.weight.shape[0],), float("-inf"), device=device)
        mask[torch.tensor(sorted(self.means), device=device)] = 0.0
        opt = torch.optim.SGD(head.parameters(), lr=self.cfg.head_refit_lr, momentum=0.9)
        with torch.enable_grad():
            for _ in range(self.cfg.head_refit_epochs):
                order = torch.randperm(x.shape[0], generator=generator).to(device)
                for i in range(0, x.shape[0], 256):
                    idx = order[i:i + 256]
                    loss = nn.functional.cross_entropy(head(x[idx]) + mask, y[idx])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
        for p in head.parameters():
            p.grad = None

    def state_dict(self) -> dict[str, Any]:
        return {"means": dict(self.means), "covs": dict(self.covs)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.means = dict(state.get("means", {}))
        self.covs = dict(state.get("covs", {}))


def make_head(config: LearnerConfig, model: nn.Module) -> Head:
    """The head named by ``config.head`` on ``model`` (a model without a class head supports ``linear`` only)."""
    cls = HEAD_REGISTRY.get(config.head)
    if cls is not Head and not hasattr(model, "features"):
        raise ValueError(f"head={config.head!r} needs a class-head model; this one generates its answers")
    return cls(config, model)


@torch.no_grad()
def reset_head_moments(optimizer: torch.optim.Optimizer, head: nn.Module | None, classes: list[int]) -> None:
    """Zero Adam's ``exp_avg``/``exp_avg_sq`` rows of ``classes`` in the head's weight and bias."""
    if head is None:
        return
    rows = torch.tensor(sorted(classes), dtype=torch.long)
    for p in head.parameters():
        state = optimizer.state.get(p, {})
        for key in ("exp_avg", "exp_avg_sq"):
            if key in state:
                state[key][rows.to(state[key].device)] = 0.0


def collect_features(
    forward: Callable[[dict[str, torch.Tensor]], torch.Tensor], batches: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    """``forward``'s features and the labels over an iterable of batches (eval mode is the caller's)."""
    feats, labels = [], []
    for batch in batches:
        feats.append(forward(batch).float())
        labels.append(batch["labels"])
    return torch.cat(feats), torch.cat(labels)
