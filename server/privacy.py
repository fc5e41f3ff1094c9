"""Per-client (ε, δ) accounting of the DP releases, with Flower's RDP accountant (backed by dp-accounting).

Every accepted train report is, per client: one Gaussian release of its signature sketch (noise multiplier
``dp-noise``), one more when the report carries a finished task's final sketch, and one adapter-update release
when ``dp-adapter-noise`` is set. Add/remove-one neighbouring relation, no sampling amplification (every client
takes part in every round it is scheduled). Only what the DP knobs cover is accounted: with ``dp-adapter-noise``
at 0 the adapters are released without DP and the report says so.
"""

from __future__ import annotations

from typing import Any

from flwr.serverapp import GaussianPrivacyEvent, NeighboringRelation, PrivacyConfig, RdpAccountant, SamplingMethod

from treelora.fed.settings import FedSettings


class ClientPrivacy:
    """One RDP accountant per client."""

    def __init__(self, fed: FedSettings) -> None:
        self.fed = fed
        self.accountants: dict[str, RdpAccountant] = {}

    @property
    def enabled(self) -> bool:
        return self.fed.dp_noise > 0 or self.fed.dp_adapter_noise > 0

    def _accountant(self, client: str) -> RdpAccountant:
        if client not in self.accountants:
            config = PrivacyConfig(
                target_delta=self.fed.dp_delta, population_size=1,
                neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
                sampling_method=SamplingMethod.NO_AMPLIFICATION,
            )
            self.accountants[client] = RdpAccountant(config)
        return self.accountants[client]

    def record(self, client: str, *, sketches: int, adapters: int) -> None:
        """Compose this report's releases into the client's account."""
        if self.fed.dp_noise > 0 and sketches:
            self._accountant(client).compose(GaussianPrivacyEvent(self.fed.dp_noise, 1, 1), count=sketches)
        if self.fed.dp_adapter_noise > 0 and adapters:
            self._accountant(client).compose(GaussianPrivacyEvent(self.fed.dp_adapter_noise, 1, 1), count=adapters)

    def report(self) -> dict[str, Any]:
        """ε at the configured δ per client, and what the guarantee covers."""
        covers = [
            name
            for name, on in (("sketches", self.fed.dp_noise > 0), ("adapters", self.fed.dp_adapter_noise > 0))
            if on
        ]
        return {
            "enabled": self.enabled,
            "delta": self.fed.dp_delta,
            "covers": covers,
            "not_covered": [x for x in ("sketches", "adapters") if x not in covers]
            + (["prototypes"] if self.fed.sends_prototypes else []),
            "per_client": {
                c: {"epsilon": a.get_epsilon(self.fed.dp_delta), "releases": a.num_releases}
                for c, a in sorted(self.accountants.items())
            },
        }

    def state_dict(self) -> dict[str, Any]:
        return {c: a.state_dict() for c, a in self.accountants.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for c, s in state.items():
            self._accountant(c).load_state_dict(s)
