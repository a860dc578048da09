"""Tiny ELF images for the tests: a header, a .dynstr and a .dynamic section, nothing else."""

from __future__ import annotations

import struct


def elf_image(machine: int, needed: tuple[str, ...] = (), runpath: str | None = None, *,
              elf_class: int = 2, big_endian: bool = False, e_type: int = 3) -> bytes:
    e = ">" if big_endian else "<"
    strtab = b"\0"
    entries = []
    for name in needed:
        entries.append((1, len(strtab)))
        strtab += name.encode() + b"\0"
    if runpath is not None:
        entries.append((29, len(strtab)))
        strtab += runpath.encode() + b"\0"
    entries.append((0, 0))
    if elf_class == 2:
        header_fmt, section_fmt, dyn_fmt = e + "16sHHIQQQIHHHHHH", e + "IIQQQQIIQQ", e + "qQ"
    else:
        header_fmt, section_fmt, dyn_fmt = e + "16sHHIIIIIHHHHHH", e + "IIIIIIIIII", e + "iI"
    header_size = struct.calcsize(header_fmt)
    dynamic = b"".join(struct.pack(dyn_fmt, tag, value) for tag, value in entries)
    strtab_offset = header_size
    dynamic_offset = strtab_offset + len(strtab)
    section_offset = dynamic_offset + len(dynamic)
    sections = [
        struct.pack(section_fmt, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
        struct.pack(section_fmt, 0, 3, 0, 0, strtab_offset, len(strtab), 0, 0, 1, 0),        # SHT_STRTAB
        struct.pack(section_fmt, 0, 6, 0, 0, dynamic_offset, len(dynamic), 1, 0, 8,          # SHT_DYNAMIC
                    struct.calcsize(dyn_fmt)),
    ]
    ident = b"\x7fELF" + bytes([elf_class, 2 if big_endian else 1, 1]) + b"\0" * 9
    header = struct.pack(header_fmt, ident, e_type, machine, 1, 0, 0, section_offset, 0, header_size,
                         0, 0, struct.calcsize(section_fmt), len(sections), 0)
    return header + strtab + dynamic + b"".join(sections)
