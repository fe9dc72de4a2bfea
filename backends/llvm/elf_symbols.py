"""The global symbols an x86-64 ELF relocatable object defines and the ones it needs, read
from its symbol table: an engine (jit.load_objects) whose objects need a symbol nobody
defines is refused before MCJIT sees it. MCJIT does not report such a symbol: it gives up on
resolving its relocations, and every call of the linked code (the entry's too) jumps to
address 0. Assumes jit.valid_object(data) (every section inside the data)."""
from __future__ import annotations

import struct

_SHT_SYMTAB = 2
_SHN_UNDEF = 0
_GLOBAL, _WEAK = 1, 2
_SYMBOL = struct.Struct("<IBBHQQ")  # st_name, st_info, st_other, st_shndx, value, size


def _section(data: bytes, index: int) -> tuple[int, int, int, int]:
    """(type, offset, size, link) of section `index`."""
    shoff, = struct.unpack_from("<Q", data, 0x28)
    base = shoff + index * 64
    kind, = struct.unpack_from("<I", data, base + 4)
    offset, size, link = struct.unpack_from("<QQI", data, base + 0x18)
    return kind, offset, size, link


def symbols(data: bytes) -> tuple[set[str], set[str]]:
    """(the global and weak symbols `data` defines, those it needs from elsewhere)."""
    shnum, = struct.unpack_from("<H", data, 0x3C)
    defined: set[str] = set()
    needed: set[str] = set()
    for i in range(shnum):
        kind, offset, size, link = _section(data, i)
        if kind != _SHT_SYMTAB:
            continue
        _, str_offset, str_size, _ = _section(data, link)
        strings = data[str_offset:str_offset + str_size]
        for name_at, info, _, shndx, _, _ in _SYMBOL.iter_unpack(
                data[offset:offset + size - size % _SYMBOL.size]):
            if info >> 4 not in (_GLOBAL, _WEAK) or not name_at:
                continue
            name = strings[name_at:strings.index(b"\0", name_at)].decode()
            (needed if shndx == _SHN_UNDEF else defined).add(name)
    return defined, needed
