#!/usr/bin/env python3
"""Writes a valid core wasm module of about SIZE bytes: `bigwasm.py OUT SIZE [FUNC_BYTES]`.

Many functions of FUNC_BYTES each (default 4096), every one a straight run of
`local.get 0; i32.const N; i32.add; local.set 0`, and an empty exported `_start`. Used by
bench/compile-rss.sh to measure what compiling a module of a given size costs in memory.
"""
import sys


def uleb(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def section(sid, payload):
    return bytes([sid]) + uleb(len(payload)) + payload


def body(func_bytes):
    # local.get 0 (2) ; i32.const 1 (2) ; i32.add (1) ; local.set 0 (2) = 7 bytes a step
    step = b"\x20\x00\x41\x01\x6a\x21\x00"
    code = b"\x01\x01\x7f" + step * max(1, (func_bytes - 4) // len(step)) + b"\x0b"
    return uleb(len(code)) + code


def main():
    out, size = sys.argv[1], int(sys.argv[2])
    func_bytes = int(sys.argv[3]) if len(sys.argv) > 3 else 4096
    one = body(func_bytes)
    n = max(1, size // len(one))
    types = section(1, uleb(1) + b"\x60\x00\x00")
    funcs = section(3, uleb(n + 1) + b"\x00" * (n + 1))
    exports = section(7, uleb(1) + uleb(6) + b"_start" + b"\x00" + uleb(n))
    start_body = uleb(2) + b"\x00\x0b"
    code = section(10, uleb(n + 1) + one * n + start_body)
    with open(out, "wb") as f:
        f.write(b"\0asm\x01\0\0\0" + types + funcs + exports + code)


main()
