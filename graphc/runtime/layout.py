"""The call layout: what calling compiled code takes besides the code, and its soundness check."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Layout:
    """What calling one compiled module takes, besides its code: the pointer table's size,
    which slot holds what, the arena, the constants. Stored with the code in the disk cache,
    so a warm start needs neither the optimizer nor the scheduler."""

    slots: int
    arena_slot: int
    arena_bytes: int
    input_slots: list[int]
    outputs: list[tuple[int, tuple[int, ...], str]]  # (slot, shape, dtype)
    params: list[tuple[int, int]]  # (slot, the parameter's number in the fingerprint)
    consts: list[tuple[int, np.ndarray]]  # (slot, value)
    errors: dict[int, str]
    # the names of the per-module thread flags a backend's runtime may set (llvm: the
    # modules with parallel kernels, see its adaptive.ThreadChooser)
    team_flags: list[str] = field(default_factory=list)
    # kernel -> (argument position, size, negatives allowed) where a kernel's indices are a
    # whole argument: an IndexError then names the offending value too
    index_args: dict[int, tuple[int, int, bool]] = field(default_factory=dict)
    # kernels whose failure is a ValueError (value checks); the others raise IndexError
    value_errors: list[int] = field(default_factory=list)

    @staticmethod
    def of(schedule, slots, errors: dict[int, str], storages: list,
           team_flags: list[str]) -> "Layout":
        number = {id(st): i for i, st in enumerate(storages)}
        return Layout(
            slots=slots.count, arena_slot=slots.arena_slot,
            arena_bytes=schedule.plan.arena_bytes if schedule.plan else 0,
            input_slots=[slots.slot[b] for b in schedule.inputs],
            outputs=[(slots.slot[b], tuple(schedule.buffers[b].shape),
                      np.dtype(schedule.buffers[b].dtype).str) for b in schedule.outputs],
            params=[(slots.slot[b], number[id(st)]) for b, st in schedule.params.items()],
            consts=[(slots.slot[b], np.ascontiguousarray(a)) for b, a in
                    schedule.consts.items()],
            errors=dict(errors), team_flags=list(team_flags),
            index_args=index_arguments(schedule, errors),
            value_errors=[i for i, k in enumerate(schedule.kernels)
                          if k.can_fail and (k.error() or (None,))[0] is ValueError])

    def fits(self, graph, parameters: int) -> bool:
        """Whether a layout read from disk is sound for this program: slots in range and
        distinct, one per input, output and parameter, outputs of the program's types."""
        slots = self.input_slots + [s for s, _, _ in self.outputs] + \
            [s for s, _ in self.params] + [s for s, _ in self.consts]
        if not (0 <= self.arena_slot < self.slots and self.arena_bytes >= 0
                and all(0 <= s < self.slots and s != self.arena_slot for s in slots)
                and len(set(slots)) == len(slots)):
            return False
        if len(self.input_slots) != len(graph.inputs) or len(self.outputs) != len(graph.outputs):
            return False
        if any(not 0 <= i < parameters for _, i in self.params):
            return False
        for (_, shape, dtype), node in zip(self.outputs, graph.outputs):
            if np.dtype(dtype) != node.dtype or len(shape) != node.ndim or any(
                    d < 0 or (isinstance(s, int) and d != s) for d, s in zip(shape, node.shape)):
                return False
        return True

    def to_meta(self) -> tuple[dict, bytes]:
        """JSON-able metadata and the constants' bytes (stored after the object code)."""
        consts, blob = encode_consts(self.consts)
        meta = {"slots": self.slots, "arena_slot": self.arena_slot,
                "arena_bytes": self.arena_bytes, "input_slots": self.input_slots,
                "outputs": [[s, list(sh), dt] for s, sh, dt in self.outputs],
                "params": [list(p) for p in self.params], "consts": consts,
                "errors": {str(k): v for k, v in self.errors.items()},
                "team_flags": self.team_flags,
                "index_args": {str(k): list(v) for k, v in self.index_args.items()},
                "value_errors": self.value_errors}
        return meta, blob

    @staticmethod
    def from_meta(meta: dict, blob: bytes) -> "Layout":
        consts = []
        for slot, dtype, shape, offset, nbytes in meta["consts"]:
            consts.append((int(slot), decode_const(blob, np.dtype(dtype), shape, offset,
                                                   nbytes)))
        return Layout(
            slots=int(meta["slots"]), arena_slot=int(meta["arena_slot"]),
            arena_bytes=int(meta["arena_bytes"]),
            input_slots=[int(s) for s in meta["input_slots"]],
            outputs=[(int(s), tuple(int(d) for d in sh), str(dt))
                     for s, sh, dt in meta["outputs"]],
            params=[(int(s), int(i)) for s, i in meta["params"]], consts=consts,
            errors={int(k): str(v) for k, v in meta["errors"].items()},
            team_flags=[str(f) for f in meta["team_flags"]],
            index_args={int(k): (int(p), int(n), bool(neg))
                        for k, (p, n, neg) in meta["index_args"].items()},
            value_errors=[int(i) for i in meta["value_errors"]])


def index_arguments(schedule, errors: dict[int, str]) -> dict[int, tuple[int, int, bool]]:
    """kernel -> (argument position, size, negatives allowed) for index checks whose indices
    are a whole argument (the runtime then names the offending value)."""
    from graphc.schedule import ir as kir
    found = {}
    for i, k in enumerate(schedule.kernels):
        if i not in errors:
            continue
        checked = k.checked_indices()
        if checked is None:
            continue
        acc, shape, size, negative = checked
        if acc.buffer in schedule.inputs and acc.offset == 0 and tuple(shape) == tuple(
                schedule.buffers[acc.buffer].shape) and tuple(acc.strides) == tuple(
                kir.contiguous_strides(tuple(shape))):
            found[i] = (schedule.inputs.index(acc.buffer), size, negative)
    return found


def encode_consts(consts: list) -> tuple[list, bytes]:
    """(slot, array) constants as JSON-able records [slot, dtype, shape, offset, nbytes]
    and the bytes they point into (stored after the object code)."""
    records, blobs, offset = [], [], 0
    for slot, a in consts:
        data = a.tobytes()
        records.append([slot, a.dtype.str, list(a.shape), offset, len(data)])
        blobs.append(data)
        offset += len(data)
    return records, b"".join(blobs)


def decode_const(blob: bytes, dtype: np.dtype, shape, offset: int, nbytes: int) -> np.ndarray:
    """One constant of encode_consts, copied out of the blob (aligned and writable)."""
    a = np.frombuffer(blob, dtype, count=nbytes // dtype.itemsize if dtype.itemsize else 0,
                      offset=offset)
    return a.reshape(shape).copy()
