"""CityHash128 v1.0.2, the checksum of ClickHouse's compressed blocks (test-only).

Used by tests/support/chdb-http.py, the test double of ClickHouse's HTTP interface, to check the
checksum of each block of a `decompress=1` body as a server does. A port of the reference
implementation (the version ClickHouse froze, as the `clickhouse` crate's `cityhash-rs`
computes it), checked against its published test vectors (`python3 cityhash102.py`).
Standard library only; 64-bit arithmetic is Python integers masked to 64 bits.
"""

M = (1 << 64) - 1  # 64-bit wrap-around
K0 = 0xc3a5c85c97cb3127
K1 = 0xb492b66fbe98f273
K2 = 0x9ae16a3b2f90404f
K3 = 0xc949d7c7509e6557
KMUL = 0x9ddfea08eb382d69


def f64(b, i=0):
    return int.from_bytes(b[i:i + 8], "little")


def f32(b, i=0):
    return int.from_bytes(b[i:i + 4], "little")


def rot(v, s):
    return v if s == 0 else ((v >> s) | (v << (64 - s))) & M


def smix(v):
    return v ^ (v >> 47)


def h16(u, v):
    a = ((u ^ v) * KMUL) & M
    a ^= a >> 47
    b = ((v ^ a) * KMUL) & M
    b ^= b >> 47
    return (b * KMUL) & M


def h0to16(s):
    n = len(s)
    if n > 8:
        a, b = f64(s), f64(s, n - 8)
        return h16(a, rot((b + n) & M, n)) ^ b
    if n >= 4:
        return h16((n + (f32(s) << 3)) & M, f32(s, n - 4))
    if n > 0:
        y = s[0] + (s[n >> 1] << 8)
        z = n + (s[n - 1] << 2)
        return (smix(((y * K2) & M) ^ ((z * K3) & M)) * K2) & M
    return K2


def weak32(s, i, a, b):
    w, x, y, z = f64(s, i), f64(s, i + 8), f64(s, i + 16), f64(s, i + 24)
    a = (a + w) & M
    b = rot((b + a + z) & M, 21)
    c = a
    a = (a + x + y) & M
    b = (b + rot(a, 44)) & M
    return (a + z) & M, (b + c) & M


def murmur(s, a, b):
    n = len(s)
    if n <= 16:
        a = (smix((a * K1) & M) * K1) & M
        c = ((b * K1) + h0to16(s)) & M
        d = smix((a + (f64(s) if n >= 8 else c)) & M)
    else:
        c = h16((f64(s, n - 8) + K1) & M, a)
        d = h16((b + n) & M, (c + f64(s, n - 16)) & M)
        a = (a + d) & M
        i = 0
        while True:
            a ^= (smix((f64(s, i) * K1) & M) * K1) & M
            a = (a * K1) & M
            b ^= a
            c ^= (smix((f64(s, i + 8) * K1) & M) * K1) & M
            c = (c * K1) & M
            d ^= c
            i += 16
            if n - i <= 16:
                break
    a = h16(a, c)
    b = h16(d, b)
    return a ^ b, h16(b, a)


def city128_seed(s, x, y):
    n = len(s)
    if n < 128:
        return murmur(s, x, y)
    z = (n * K1) & M
    v0 = (rot(y ^ K1, 49) * K1 + f64(s)) & M
    v1 = (rot(v0, 42) * K1 + f64(s, 8)) & M
    w0 = (rot((y + z) & M, 35) * K1 + x) & M
    w1 = (rot((x + f64(s, 88)) & M, 53) * K1) & M
    i = 0
    while True:
        for _ in range(2):
            x = (rot((x + y + v0 + f64(s, i + 16)) & M, 37) * K1) & M
            y = (rot((y + v1 + f64(s, i + 48)) & M, 42) * K1) & M
            x ^= w1
            y ^= v0
            z = rot(z ^ w0, 33)
            v0, v1 = weak32(s, i, (v1 * K1) & M, (x + w0) & M)
            w0, w1 = weak32(s, i + 32, (z + w1) & M, y)
            z, x = x, z
            i += 64
        if n - i < 128:
            break
    y = (y + ((rot(w0, 37) * K0) & M) + z) & M
    x = (x + ((rot((v0 + z) & M, 49) * K0) & M)) & M
    done = 0
    while done < n - i:
        done += 32
        y = (rot((y - x) & M, 42) * K0 + v1) & M
        w0 = (w0 + f64(s, n - done + 16)) & M
        x = (rot(x, 49) * K0 + w0) & M
        w0 = (w0 + v0) & M
        v0, v1 = weak32(s, n - done, v0, v1)
    x = h16(x, v0)
    y = h16(y, w0)
    return (h16((x + v1) & M, w1) + y) & M, h16((x + w1) & M, (y + v1) & M)


def city128(s):
    n = len(s)
    if n >= 16:
        return city128_seed(s[16:], f64(s) ^ K3, f64(s, 8))
    if n >= 8:
        return city128_seed(b"", f64(s) ^ ((n * K0) & M), f64(s, n - 8) ^ K1)
    return city128_seed(s, K0, K1)


def checksum(block):
    """The 16 bytes ClickHouse writes before a compressed block: CityHash128 of the block
    (method byte, sizes and data), its first half first, each half little-endian."""
    first, second = city128(block)
    return first.to_bytes(8, "little") + second.to_bytes(8, "little")


def _test_data(size):
    """The reference test's input: bytes from a fixed pseudo-random sequence."""
    out, a, b = bytearray(size), 9, 777
    for i in range(size):
        a = (((a ^ (a >> 41)) * K0) + b) & M
        b = (((b ^ (b >> 41)) * K0) + i) & M
        out[i] = (b >> 37) & 0xFF
    return bytes(out)


# (i, first, second): CityHash128 of the reference data[i * i : i * i + i], from CityHash's
# own test table; the lengths cover every path (empty, under 16, under 128, longer).
_VECTORS = [
    (0, 0x3DF09DFC64C09A2B, 0x3CB540C392E51E29),
    (12, 0x2498586AC2E1FAB2, 0xE683F9CBEA22809A),
    (50, 0x3DF880C945E68AED, 0x5E08A75E956D456F),
    (150, 0x7926E11179D2B882, 0xE94FCAA22D091D09),
    (290, 0xD865088B9158AB0D, 0x08DCE24A60FD399D),
]

if __name__ == "__main__":
    data = _test_data(290 * 290 + 290)
    for i, first, second in _VECTORS:
        assert city128(data[i * i:i * i + i]) == (first, second), f"vector {i}"
    print(f"cityhash102: {len(_VECTORS)} reference vectors match")
