// Device helpers included at the top of every generated module (see codegen.rs). The module
// defines HOST_DEFAULT_NAN before this text.
typedef long long i64;
typedef unsigned long long u64;
typedef unsigned int u32;
typedef unsigned char u8;
typedef __int128 i128;
typedef unsigned __int128 u128;

#define ERR_DIVIDE_BY_ZERO 1u
#define ERR_OVERFLOW 2u
#define ERR_TABLE_FULL 4u

// A null validity bitmap means every row is valid, as in Arrow.
__device__ __forceinline__ bool valid_at(const u8* bits, i64 row) {
    return bits == 0 || ((bits[row >> 3] >> (row & 7)) & 1);
}
__device__ __forceinline__ bool bit_at(const u8* bits, i64 row) {
    return (bits[row >> 3] >> (row & 7)) & 1;
}
// IEEE total order as signed integers (Rust's f64::total_cmp): NaN above everything, -0.0 < 0.0.
__device__ __forceinline__ i64 f64_order(double v) {
    i64 x = __double_as_longlong(v);
    return x ^ (i64)(((u64)(x >> 63)) >> 1);
}
// Comparisons: total order, but -0.0 equals 0.0 as in DataFusion's float comparisons.
__device__ __forceinline__ i64 f64_compare_key(double v) {
    return f64_order(v == 0.0 ? 0.0 : v);
}
__device__ __forceinline__ double f64_from_order(i64 x) {
    return __longlong_as_double(x ^ (i64)(((u64)(x >> 63)) >> 1));
}
__device__ __forceinline__ i128 make_i128(i64 hi, u64 lo) {
    return (i128)(((u128)(u64)hi << 64) | (u128)lo);
}

__device__ __forceinline__ int add_i32(int a, int b, bool checked, u32* err) {
    i64 r = (i64)a + (i64)b;
    if (checked && (r > 2147483647LL || r < -2147483648LL)) *err |= ERR_OVERFLOW;
    return (int)(u32)(u64)r;
}
__device__ __forceinline__ int sub_i32(int a, int b, bool checked, u32* err) {
    i64 r = (i64)a - (i64)b;
    if (checked && (r > 2147483647LL || r < -2147483648LL)) *err |= ERR_OVERFLOW;
    return (int)(u32)(u64)r;
}
__device__ __forceinline__ int mul_i32(int a, int b, bool checked, u32* err) {
    i64 r = (i64)a * (i64)b;
    if (checked && (r > 2147483647LL || r < -2147483648LL)) *err |= ERR_OVERFLOW;
    return (int)(u32)(u64)r;
}
__device__ __forceinline__ i64 add_i64(i64 a, i64 b, bool checked, u32* err) {
    i64 r = (i64)((u64)a + (u64)b);
    if (checked && ((a ^ r) & (b ^ r)) < 0) *err |= ERR_OVERFLOW;
    return r;
}
__device__ __forceinline__ i64 sub_i64(i64 a, i64 b, bool checked, u32* err) {
    i64 r = (i64)((u64)a - (u64)b);
    if (checked && ((a ^ b) & (a ^ r)) < 0) *err |= ERR_OVERFLOW;
    return r;
}
__device__ __forceinline__ i64 mul_i64(i64 a, i64 b, bool checked, u32* err) {
    i64 lo = (i64)((u64)a * (u64)b);
    if (checked && __mul64hi(a, b) != (lo >> 63)) *err |= ERR_OVERFLOW;
    return lo;
}
__device__ __forceinline__ i128 add_i128(i128 a, i128 b, bool checked, u32* err) {
    i128 r = (i128)((u128)a + (u128)b);
    if (checked && ((a ^ r) & (b ^ r)) < 0) *err |= ERR_OVERFLOW;
    return r;
}
__device__ __forceinline__ i128 sub_i128(i128 a, i128 b, bool checked, u32* err) {
    i128 r = (i128)((u128)a - (u128)b);
    if (checked && ((a ^ b) & (a ^ r)) < 0) *err |= ERR_OVERFLOW;
    return r;
}
// 128-bit product through 64-bit halves of the magnitudes, so no 128-bit division is needed to
// detect overflow.
__device__ __forceinline__ i128 mul_i128(i128 a, i128 b, bool checked, u32* err) {
    i128 wrapped = (i128)((u128)a * (u128)b);
    if (!checked) return wrapped;
    bool negative = (a < 0) != (b < 0);
    u128 ua = a < 0 ? (u128)0 - (u128)a : (u128)a;
    u128 ub = b < 0 ? (u128)0 - (u128)b : (u128)b;
    u64 ah = (u64)(ua >> 64), al = (u64)ua, bh = (u64)(ub >> 64), bl = (u64)ub;
    bool overflow = ah != 0 && bh != 0;
    u128 low = (u128)al * (u128)bl;
    u128 cross = (u128)ah * (u128)bl + (u128)al * (u128)bh;
    overflow = overflow || (cross >> 64) != 0;
    u128 magnitude = low + (cross << 64);
    overflow = overflow || magnitude < low;
    u128 limit = ((u128)1 << 127) - (negative ? 0 : 1);
    overflow = overflow || magnitude > limit;
    if (overflow) *err |= ERR_OVERFLOW;
    return wrapped;
}
__device__ __forceinline__ i128 rescale_i128(i128 v, int digits, bool checked, u32* err) {
    for (int i = 0; i < digits; i++) v = mul_i128(v, (i128)10, checked, err);
    return v;
}

// Division and remainder are always checked, as in arrow: by zero, and MIN / -1.
// MIN % -1 is 0 (arrow's wrapping remainder); MIN / -1 overflows.
__device__ __forceinline__ int div_i32(int a, int b, bool rem, u32* err) {
    if (b == 0) { *err |= ERR_DIVIDE_BY_ZERO; return 0; }
    if (a == (-2147483647 - 1) && b == -1) {
        if (!rem) *err |= ERR_OVERFLOW;
        return 0;
    }
    return rem ? a % b : a / b;
}
__device__ __forceinline__ i64 div_i64(i64 a, i64 b, bool rem, u32* err) {
    if (b == 0) { *err |= ERR_DIVIDE_BY_ZERO; return 0; }
    if (a == (-9223372036854775807LL - 1) && b == -1) {
        if (!rem) *err |= ERR_OVERFLOW;
        return 0;
    }
    return rem ? a % b : a / b;
}
// A NaN result carries the NaN the host CPU would give: the first NaN operand, quieted, or the
// host's default NaN (x86-64: negative) when the operation made it. CUDA's own NaN is positive,
// and floats compare in total order, where a NaN's sign decides its place.
__device__ __forceinline__ double host_nan(double r, double a, double b) {
    if (r == r) return r;
    if (a != a) return __longlong_as_double(__double_as_longlong(a) | 0x0008000000000000LL);
    if (b != b) return __longlong_as_double(__double_as_longlong(b) | 0x0008000000000000LL);
    return __longlong_as_double(HOST_DEFAULT_NAN);
}
__device__ __forceinline__ double add_f64(double a, double b) { return host_nan(__dadd_rn(a, b), a, b); }
__device__ __forceinline__ double sub_f64(double a, double b) { return host_nan(__dsub_rn(a, b), a, b); }
__device__ __forceinline__ double mul_f64(double a, double b) { return host_nan(__dmul_rn(a, b), a, b); }
// Floats follow IEEE: x / 0.0 is an infinity or NaN, as in arrow's float kernels.
__device__ __forceinline__ double div_f64(double a, double b, bool rem) {
    return host_nan(rem ? fmod(a, b) : __ddiv_rn(a, b), a, b);
}

__device__ __forceinline__ u64 mix64(u64 x) {
    x ^= x >> 30; x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27; x *= 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

// The position of a kept row among the kept rows of its block, in row order, through warp
// ballots and a scan of the warps' counts in shared memory. Every thread of the block must call
// it (it synchronises the block).
__device__ __forceinline__ u32 rank_in_block(bool keep, u32* warp_offsets) {
    u32 lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
    u32 ballot = __ballot_sync(0xffffffffu, keep);
    if (lane == 0) warp_offsets[warp] = __popc(ballot);
    __syncthreads();
    if (threadIdx.x == 0) {
        u32 running = 0;
        for (u32 w = 0; w < (blockDim.x + 31u) / 32u; w++) {
            u32 c = warp_offsets[w];
            warp_offsets[w] = running;
            running += c;
        }
    }
    __syncthreads();
    return warp_offsets[warp] + __popc(ballot & ((1u << lane) - 1u));
}
