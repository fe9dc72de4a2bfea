"""What the optimizer did: per pass, the rules that fired and the node counts."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class PassStats:
    name: str
    nodes_before: int
    nodes_after: int
    fired: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    # the graph after this pass, kept when the pass changed it (else None): graphs share
    # their interned nodes, so this holds only what the pass made or the later ones removed
    graph: Any = field(default=None, repr=False, compare=False)


@dataclass
class PassReport:
    passes: list[PassStats] = field(default_factory=list)

    @property
    def nodes_before(self) -> int:
        return self.passes[0].nodes_before if self.passes else 0

    @property
    def nodes_after(self) -> int:
        return self.passes[-1].nodes_after if self.passes else 0

    def fired(self) -> Counter:
        total: Counter = Counter()
        for p in self.passes:
            total.update(p.fired)
        return total

    def table(self) -> str:
        """The report as text: per pass its node counts, time and the rules that fired."""
        return str(self)

    def __str__(self) -> str:
        if not self.passes:
            return "no passes ran"
        lines = [f"optimizer: {self.nodes_before} -> {self.nodes_after} nodes"]
        for p in self.passes:
            rules = ", ".join(f"{k} x{v}" for k, v in p.fired.most_common()) or "nothing fired"
            lines.append(f"  {p.name:<13} {p.nodes_before:>6} -> {p.nodes_after:<6} "
                         f"{p.seconds * 1e3:7.1f} ms  {rules}")
        return "\n".join(lines)
