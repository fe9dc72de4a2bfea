"""The entry point `i32 graphc_main(ptr buffers)` as a table and a loop: for each kernel in
order, its pointer table is filled from the program's slots and the arena, its function
called and (kernels that can fail) its status checked. The code is the same few blocks for
any program; what grows with the kernel count is constant data, which LLVM emits at once
(straight-line calls of a 96-layer step took as long as compiling its kernels). The loop
is optimized like any code (a few ms), so walking the table costs little per call."""
from __future__ import annotations

from typing import Sequence

from graphc.runtime.errors import status_of
from graphc.runtime.slots import SlotMap
from graphc.schedule.ir import Schedule

# The status of kernel i is status_of(i) = i + status_of(0): the loop adds it to i.
STATUS_BASE = status_of(0)

_LOOP = """\
define i32 @"{entry}"(ptr %bufs) noinline
{{
entry:
  %table = alloca ptr, i64 {widest}
  %arena.slot = getelementptr ptr, ptr %bufs, i64 {arena_slot}
  %arena = load ptr, ptr %arena.slot
{load_desc}  br label %kernel
kernel:
  %i = phi i64 [0, %entry], [%i.next, %next]
  %pos = phi i64 [0, %entry], [%pos.next, %next]
  %all.done = icmp eq i64 %i, {count}
  br i1 %all.done, label %done, label %start
start:
  %count.at = getelementptr i64, ptr {desc}, i64 %pos
  %n = load i64, ptr %count.at
  %pos.1 = add i64 %pos, 1
  %check.at = getelementptr i64, ptr {desc}, i64 %pos.1
  %check = load i64, ptr %check.at
  %first = add i64 %pos, 2
  br label %fill
fill:
  %j = phi i64 [0, %start], [%j.next, %one]
  %filled = icmp eq i64 %j, %n
  br i1 %filled, label %call, label %one
one:
  %source.at.index = add i64 %first, %j
  %source.at = getelementptr i64, ptr {desc}, i64 %source.at.index
  %source = load i64, ptr %source.at
  %is.temp = icmp slt i64 %source, 0
  %offset = sub i64 -1, %source
  %in.arena = getelementptr i8, ptr %arena, i64 %offset
  %slot = select i1 %is.temp, i64 0, i64 %source
  %slot.at = getelementptr ptr, ptr %bufs, i64 %slot
  %in.slot = load ptr, ptr %slot.at
  %pointer = select i1 %is.temp, ptr %in.arena, ptr %in.slot
  %entry.at = getelementptr ptr, ptr %table, i64 %j
  store ptr %pointer, ptr %entry.at
  %j.next = add i64 %j, 1
  br label %fill
call:
  %fn.at = getelementptr ptr, ptr @graphc_entry_fns, i64 %i
  %fn = load ptr, ptr %fn.at
  %status = call i32 %fn(ptr %table)
  %may.fail = icmp ne i64 %check, 0
  %failed.here = icmp ne i32 %status, 0
  %failed = and i1 %may.fail, %failed.here
  br i1 %failed, label %fail, label %next
fail:
  %which = add i64 %i, {status_base}
  %code = trunc i64 %which to i32
  ret i32 %code
next:
  %i.next = add i64 %i, 1
  %pos.next = add i64 %first, %n
  br label %kernel
done:
  ret i32 0
}}
"""


def descriptor(schedule: Schedule, slots: SlotMap, buffers: Sequence[tuple[int, ...]],
               offsets: dict[int, int], extra: Sequence[int | None] = ()) -> list[int]:
    """Per kernel, the count of its table's entries, whether its status is checked, and for
    each buffer its slot, or -1 - its arena offset for a temporary (`offsets`). `extra`:
    per kernel, the arena offset of an entry after its buffers (its symbolic sizes), or
    None."""
    desc: list[int] = []
    for i, (kernel, bids) in enumerate(zip(schedule.kernels, buffers)):
        more = extra[i] if extra else None
        desc += [len(bids) + (more is not None), int(kernel.can_fail)]
        for bid in bids:
            if schedule.buffers[bid].role == "temp":
                desc.append(-1 - offsets.get(bid, 0))
            else:
                desc.append(slots.slot[bid])
        if more is not None:
            desc.append(-1 - more)
    return desc


def entry_text(schedule: Schedule, slots: SlotMap, functions: Sequence[str],
               buffers: Sequence[tuple[int, ...]], entry: str,
               desc_slot: int | None = None) -> str:
    """The entry module's IR. `functions`: each kernel's function name; `buffers`: each
    kernel's buffers in its pointer table's order. The descriptor (`descriptor`) is a
    constant, or, with `desc_slot`, data the runtime makes for each binding of symbolic
    sizes (the arena's offsets change with them) and hands over in that slot."""
    desc = [] if desc_slot is not None else descriptor(schedule, slots, buffers,
                                                       slots.offsets)
    names = sorted(set(functions))
    lines = [f"; kernel {i}: {name}" for i, name in enumerate(functions)]
    lines += ['; ModuleID = "graphc"', ""]
    lines += [f'declare i32 @"{name}"(ptr)' for name in names]
    count = len(functions)
    fns = ", ".join(f'ptr @"{name}"' for name in functions)
    values = ", ".join(f"i64 {v}" for v in desc)
    lines.append(f"@graphc_entry_fns = internal constant [{count} x ptr] "
                 f"{'[' + fns + ']' if fns else 'zeroinitializer'}")
    if desc_slot is None:
        lines.append(f"@graphc_entry_desc = internal constant [{len(desc)} x i64] "
                     f"{'[' + values + ']' if values else 'zeroinitializer'}")
        load_desc, where = "", "@graphc_entry_desc"
    else:
        load_desc = (f"  %desc.slot = getelementptr ptr, ptr %bufs, i64 {desc_slot}\n"
                     "  %desc = load ptr, ptr %desc.slot\n")
        where = "%desc"
    widest = max((len(bids) + 1 for bids in buffers), default=0)
    lines.append(_LOOP.format(entry=entry, widest=max(1, widest), count=count,
                              arena_slot=slots.arena_slot, status_base=STATUS_BASE,
                              load_desc=load_desc, desc=where))
    return "\n".join(lines)
