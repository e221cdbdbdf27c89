// The element math of sample.cu that decides which token is drawn, kept in C99 so that a
// host test (crates/kernels/src/sample_math_tests.rs) compiles this very file with `cc`
// and checks it bit for bit against the CPU port (sample_cpu.rs), which repeats each
// operation in the same order. Every float operation is an explicit round-to-nearest
// intrinsic (never contracted into an FMA), constants are given by their bits.
//
// - clean: NaN -> -inf, +inf -> FLT_MAX, -0 -> +0.
// - key_ord / key_unord: a monotone map of floats (no NaN) to u32 and back.
// - exp_nonpos: exp(x) for x <= 0 (Cody-Waite, Cephes polynomial); 0 for x <= -87.
// - weight = exp_nonpos((x - max) / t); mass = trunc(w * 2^40).
// - exponential: an Exp(1) variate -ln U from 32 random bits, U = (2b + 1) / 2^33.
// - philox4x32_10: Random123's Philox4x32 with 10 rounds.
//
// The includer defines SAMPLE_FN (the CUDA kernel: static __device__ __forceinline__;
// the host test: static inline plus host versions of the intrinsics).
#pragma once

SAMPLE_FN float bitsf(uint32_t b) { return __uint_as_float(b); }

SAMPLE_FN float clean(float x) {
    if (x != x) return -INFINITY;
    if (x == INFINITY) return bitsf(0x7f7fffffu);
    if (x == 0.f) return 0.f;
    return x;
}

SAMPLE_FN uint32_t key_ord(float x) {
    const uint32_t u = __float_as_uint(x);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

SAMPLE_FN float key_unord(uint32_t o) {
    return __uint_as_float((o & 0x80000000u) ? (o & 0x7fffffffu) : ~o);
}

SAMPLE_FN float exp_nonpos(float x) {
    if (!(x > -87.f)) return 0.f;
    x = x < 0.f ? x : 0.f;
    const float shift = bitsf(0x4b400000u);  // 1.5 * 2^23: adding it rounds to an integer
    const float t = __fadd_rn(__fmul_rn(x, bitsf(0x3fb8aa3bu)), shift);  // log2(e)
    const float n = __fsub_rn(t, shift);
    const float r = __fsub_rn(__fsub_rn(x, __fmul_rn(n, bitsf(0x3f318000u))),
                              __fmul_rn(n, bitsf(0xb95e8083u)));  // ln 2, hi + lo
    float p = bitsf(0x39506967u);
    p = __fadd_rn(__fmul_rn(p, r), bitsf(0x3ab743ceu));
    p = __fadd_rn(__fmul_rn(p, r), bitsf(0x3c088908u));
    p = __fadd_rn(__fmul_rn(p, r), bitsf(0x3d2aa9c1u));
    p = __fadd_rn(__fmul_rn(p, r), bitsf(0x3e2aaaaau));
    p = __fadd_rn(__fmul_rn(p, r), bitsf(0x3f000000u));
    const float y = __fadd_rn(__fadd_rn(__fmul_rn(__fmul_rn(p, r), r), r), 1.f);
    const uint32_t e = __float_as_uint(t) - __float_as_uint(shift);  // n, two's complement
    return __fmul_rn(y, __uint_as_float((e + 127u) << 23));
}

SAMPLE_FN float weight(float x, float max, float t) {
    return exp_nonpos(__fdiv_rn(__fsub_rn(x, max), t));
}

SAMPLE_FN unsigned long long mass(float w) {
    return __float2ull_rz(__fmul_rn(w, bitsf(0x53800000u)));  // 2^40
}

// ln(1 + f), f in (-1/2, 1): 2 atanh(s), s = f / (2 + f) in (-1/3, 1/3).
SAMPLE_FN float log1p_series(float f) {
    const float s = __fdiv_rn(f, __fadd_rn(2.f, f));
    const float s2 = __fmul_rn(s, s);
    float p = bitsf(0x3d70f0f1u);  // 1/17, then 1/15 ... 1/3
    p = __fadd_rn(__fmul_rn(p, s2), bitsf(0x3d888889u));
    p = __fadd_rn(__fmul_rn(p, s2), bitsf(0x3d9d89d9u));
    p = __fadd_rn(__fmul_rn(p, s2), bitsf(0x3dba2e8cu));
    p = __fadd_rn(__fmul_rn(p, s2), bitsf(0x3de38e39u));
    p = __fadd_rn(__fmul_rn(p, s2), bitsf(0x3e124925u));
    p = __fadd_rn(__fmul_rn(p, s2), bitsf(0x3e4ccccdu));
    p = __fadd_rn(__fmul_rn(p, s2), bitsf(0x3eaaaaabu));
    return __fmul_rn(2.f, __fadd_rn(s, __fmul_rn(__fmul_rn(s, s2), p)));
}

// -ln U where it is precise: U <= 1/2 directly, else -ln(1 - V) with V = 1 - U.
SAMPLE_FN float exponential(uint32_t b) {
    const float two_m33 = bitsf(0x2f000000u);
    if (b >= 0x80000000u) {
        const float v = __fmul_rn(__uint2float_rn(~b * 2u + 1u), two_m33);
        return -log1p_series(-v);
    }
    const float u = __fmul_rn(__uint2float_rn(b * 2u + 1u), two_m33);
    const uint32_t ub = __float_as_uint(u);
    const float e = (float)((int)(ub >> 23) - 127);
    const float m = __uint_as_float((ub & 0x007fffffu) | 0x3f800000u);
    return -__fadd_rn(__fmul_rn(e, bitsf(0x3f317218u)), log1p_series(__fsub_rn(m, 1.f)));
}

SAMPLE_FN uint4 philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0,
                              uint32_t k1) {
#ifdef __CUDACC__
#pragma unroll
#endif
    for (int i = 0; i < 10; ++i) {
        const uint32_t hi0 = __umulhi(0xD2511F53u, c0), lo0 = 0xD2511F53u * c0;
        const uint32_t hi1 = __umulhi(0xCD9E8D57u, c2), lo1 = 0xCD9E8D57u * c2;
        const uint32_t n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
        c0 = n0;
        c1 = lo1;
        c2 = n2;
        c3 = lo0;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    return make_uint4(c0, c1, c2, c3);
}
