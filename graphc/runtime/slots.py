"""The slot table: where each buffer of a schedule is found when native code is called."""
from __future__ import annotations

from graphc.schedule.lower import Schedule


class SlotMap:
    """Where each buffer's data starts: non-temporaries have a slot in the pointer array
    handed to the entry point; temporaries live at fixed offsets in the arena (last slot)."""

    def __init__(self, schedule: Schedule) -> None:
        self.slot: dict[int, int] = {}
        for b in schedule.buffers.values():
            if b.role != "temp":
                self.slot[b.id] = len(self.slot)
        self.arena_slot = len(self.slot)
        self.offsets = schedule.plan.offsets if schedule.plan else {}

    @property
    def count(self) -> int:
        return self.arena_slot + 1
