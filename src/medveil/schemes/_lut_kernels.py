"""The compiled gather loops behind :func:`medveil.schemes._lut.apply_lut` (numba; loaded only for large arrays)."""

from llvmlite import binding, ir
from numba import config, njit, prange, types
from numba.extending import intrinsic

# AVX-512 VBMI (Intel Ice Lake on, AMD Zen 4 on) permutes bytes across a 64-byte register by a
# register of indices: a 256-entry byte table is four registers, and 64 pixels map in three
# instructions, faster than memcpy. Only where numba compiles for this very CPU: asked to build for
# another (NUMBA_CPU_NAME), LLVM cannot emit it, and there the pair-table loop runs instead.
PERMUTES_BYTES = getattr(config, "CPU_NAME", None) in (None, "host") and bool(binding.get_host_cpu_features().get("avx512vbmi"))


@njit(parallel=True, boundscheck=False, nogil=True, cache=True)
def gather_parallel(src, lut, dst):
    for i in prange(src.size):
        dst[i] = lut[src[i]]


@njit(parallel=True, boundscheck=False, nogil=True, cache=True)
def gather_counting(src, lut, dst, invalid):
    """:func:`gather_parallel` that also counts the looked-up values equal to ``invalid``, in the same pass."""
    hits = 0
    for i in prange(src.size):
        value = lut[src[i]]
        dst[i] = value
        hits += value == invalid
    return hits


@intrinsic
def _map_64_bytes(typingctx, src, table, dst):
    """``dst[:64] = table[src[:64]]`` at three addresses (``table`` 256 bytes), with AVX-512 VBMI."""
    signature = types.void(types.uintp, types.uintp, types.uintp)

    def codegen(context, builder, signature, args):
        src, table, dst = args
        vector = ir.VectorType(ir.IntType(8), 64)
        pointer = vector.as_pointer()
        values = builder.load(builder.inttoptr(src, pointer), align=1)
        start = builder.inttoptr(table, pointer)
        quarter = [builder.load(builder.gep(start, [ir.Constant(ir.IntType(64), q)]), align=1) for q in range(4)]
        permute = builder.module.declare_intrinsic(
            "llvm.x86.avx512.vpermi2var.qi.512", fnty=ir.FunctionType(vector, [vector, vector, vector]))
        low = builder.call(permute, [quarter[0], values, quarter[1]])  # entries 0-127, by the index's low 7 bits
        high = builder.call(permute, [quarter[2], values, quarter[3]])  # entries 128-255
        from_high = builder.icmp_signed("<", values, ir.Constant(vector, None))  # bit 7 set
        builder.store(builder.select(from_high, high, low), builder.inttoptr(dst, pointer), align=1)
        return context.get_dummy_value()

    return signature, codegen


@njit(parallel=True, boundscheck=False, nogil=True, cache=True)
def gather_bytes_permuting(src, table, dst):
    """Apply a 256-entry uint8 table to uint8 values, 64 values per step: :func:`gather_parallel`.

    Needs :data:`PERMUTES_BYTES`; any address, any size.
    """
    steps = src.size // 64
    s, t, d = src.ctypes.data, table.ctypes.data, dst.ctypes.data
    for step in prange(steps):
        _map_64_bytes(s + 64 * step, t, d + 64 * step)
    for i in range(steps * 64, src.size):
        dst[i] = table[src[i]]
