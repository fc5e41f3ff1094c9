"""What leaves a client, in one place: every tensor a report may carry, and the differential privacy applied to it.

A train report carries, by the federated method's contract (:class:`treelora.fed.methods.FedMethod`):

* ``adapter.<l>.A/B`` — the live LoRA after this round (``sends_adapters``); with ``dp-adapter-noise`` the round's
  update (live − start of round) is clipped and noised before it is added back;
* ``sketch.<l>`` — the sketch of the current task's running signature (``sends_sketches``);
* ``final.<l>`` — when the task ends, the sketch of its final signature (``sends_sketches``);
* ``proto.<c>.sum`` / ``proto.<c>.count`` — per class of the current task, the sum of the client's features over
  its shard and their count (``FedSettings.sends_prototypes``: ``fedproto``, or ``share-prototypes`` with the
  ``ncm`` head, then at the adapter of this report; no DP covers them, so a run config with DP is refused then).

With ``dp-noise`` a signature is clipped and noised *before* sketching (a Cauchy sketch has unbounded L2
sensitivity, so noise after it would not be calibrated). Noise comes from OS entropy: a seed the server could
derive (run seed, round) would let it subtract the noise. Adapters travel as ``wire-dtype``, sketches as float32.
Raw examples, labels, gradients, full signatures, the optimiser state and the head never leave (``fedproto``'s
class sums are a head's statistics: they leave by that method's contract).
"""

from __future__ import annotations

import secrets

import numpy as np
import torch

from protos import treelora_fed_pb2 as pb
from protos.wire import adapter_name, encode_tensors, final_name, proto_name, sketch_name
from treelora.adapters import LayerwiseLoRA
from treelora.fed.settings import FedSettings
from treelora.privacy import gaussian_release
from treelora.sketch import LayerSketcher

__all__ = ["Outbox", "secret_generator", "layer_vectors"]


def secret_generator() -> torch.Generator:
    """A generator seeded from OS entropy (for DP noise the server must not be able to reproduce)."""
    return torch.Generator().manual_seed(secrets.randbits(63))


def layer_vectors(lora: LayerwiseLoRA) -> list[torch.Tensor]:
    """Each layer's ``[A, B]`` flattened into one vector (detached, on the LoRA's device)."""
    return [torch.cat([p.detach().flatten() for p in lora.params(layer)]) for layer in range(lora.num_layers)]


class Outbox:
    """Collects one report's tensors under the method's contract and the DP settings, then encodes them."""

    def __init__(self, fed: FedSettings, sketcher: LayerSketcher) -> None:
        self.fed = fed
        self.sketcher = sketcher
        self.method = fed.fed_method
        self.tensors: dict[str, torch.Tensor] = {}
        self._sketch_rng = secret_generator()

    def add_adapter(self, lora: LayerwiseLoRA, start: list[torch.Tensor]) -> None:
        """The live adapter (``start``: each layer's vector at the start of the round, on CPU)."""
        live = layer_vectors(lora)
        if self.fed.dp_adapter_noise > 0:
            update = [x.cpu() - y for x, y in zip(live, start)]
            noisy = gaussian_release(update, clip=self.fed.dp_adapter_clip,
                                     noise_multiplier=self.fed.dp_adapter_noise, generator=secret_generator())
            live = [y + u for y, u in zip(start, noisy)]
        if not self.method.sends_adapters:
            return
        for layer in range(lora.num_layers):
            a, b = lora.params(layer)
            parts = {"A": live[layer][: a.numel()].view_as(a), "B": live[layer][a.numel():].view_as(b)}
            for part in self.method.sent_parts:
                self.tensors[adapter_name(layer, part)] = parts[part].cpu()

    def release(self, signature: list[torch.Tensor]) -> list[torch.Tensor]:
        """A signature as it may leave the node: clipped and noised when DP is on, then sketched."""
        return self._released_sketch(signature)

    def add_released(self, sketches: list[torch.Tensor], *, final: bool = False) -> None:
        """Sketches released earlier (a task's shared-probe signature is released once and sent again, which costs
        no privacy: post-processing of one release)."""
        if self.method.sends_sketches:
            for layer, s in enumerate(sketches):
                self.tensors[(final_name if final else sketch_name)(layer)] = s

    def _released_sketch(self, signature: list[torch.Tensor]) -> list[torch.Tensor]:
        if self.fed.dp_noise > 0:
            signature = gaussian_release(signature, clip=self.fed.dp_clip, noise_multiplier=self.fed.dp_noise,
                                         generator=self._sketch_rng)
        return self.sketcher.sketch(signature)

    def add_sketch(self, signature: list[torch.Tensor]) -> None:
        """The running signature of the current task (``sketch.<l>``)."""
        if self.method.sends_sketches:
            for layer, s in enumerate(self._released_sketch(signature)):
                self.tensors[sketch_name(layer)] = s

    def add_final(self, signature: list[torch.Tensor]) -> None:
        """A finished task's final signature (``final.<l>``)."""
        if self.method.sends_sketches:
            for layer, s in enumerate(self._released_sketch(signature)):
                self.tensors[final_name(layer)] = s

    def add_prototypes(self, stats: dict[int, tuple[torch.Tensor, int]]) -> None:
        """Per class of the current task, its feature sum and count (``proto.<c>.sum`` / ``proto.<c>.count``)."""
        if self.fed.sends_prototypes:
            for cls, (total, count) in sorted(stats.items()):
                self.tensors[proto_name(cls, "sum")] = total.float().cpu()
                self.tensors[proto_name(cls, "count")] = torch.tensor([float(count)])

    def encode(self) -> tuple[dict[str, np.ndarray], list[pb.TensorInfo]]:
        """(arrays, manifest): adapters in the wire dtype, sketches and prototype statistics in float32."""
        return encode_tensors(
            self.tensors,
            lambda name: "float32" if name.startswith(("sketch.", "final.", "proto.")) else self.fed.wire_dtype,
        )
