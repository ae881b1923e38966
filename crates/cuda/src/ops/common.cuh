// Shared by every kernel: fixed-width types, f16/bf16 conversion and int8
// dot products through PTX (so no CUDA header is needed at run time), and
// warp reductions. All kernels are compiled as one NVRTC module.

typedef unsigned char u8;
typedef signed char i8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

#define WARP_SIZE 32
#define FULL_MASK 0xffffffffu
#define NEG_INF __int_as_float(0xff800000)

__device__ __forceinline__ float h2f(u16 h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

__device__ __forceinline__ u16 f2h(float f) {
    u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

__device__ __forceinline__ float bf2f(u16 b) { return __uint_as_float(((u32)b) << 16); }

// Round to nearest even, NaN kept quiet (as ggml's fp32_to_bf16).
__device__ __forceinline__ u16 f2bf(float f) {
    u32 u = __float_as_uint(f);
    if ((u & 0x7fffffff) > 0x7f800000) return (u16)((u >> 16) | 64);
    return (u16)((u + (0x7fff + ((u >> 16) & 1))) >> 16);
}

// Four int8 products summed into c (dp4a: four per instruction, and no
// int-to-float conversion in the inner loop).
__device__ __forceinline__ int dp4a(int a, int b, int c) {
    int d;
    asm("dp4a.s32.s32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
}

// Four bytes from an address that is only 2-byte aligned (the legacy
// blocks and Q6_K are 18, 20, 22, 34 and 210 bytes long).
__device__ __forceinline__ int load_u32_a2(const u8* p) {
    const u16* h = (const u16*)p;
    return (int)((u32)h[0] | ((u32)h[1] << 16));
}

// Programmatic dependent launch (sm_90 on): kernels are launched so that
// the next one on the stream may be scheduled while this one drains, hiding
// the gap between them. Every kernel calls this first, before it touches
// memory: it lets the next kernel start, then waits until the previous one
// has finished and its writes are visible. (Each kernel waiting for its
// predecessor keeps the whole stream in order.)
__device__ __forceinline__ void follow_predecessor() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, o));
    return v;
}

// ggml's vectorised expf (the CPU backend's ggml_math::expf), operation for
// operation, so that softmax weights and SiLU match the CPU bit for bit.
__device__ __forceinline__ float ggml_expf(float x) {
    const float shift = __uint_as_float(0x4b400000u);
    float z = __fmaf_rn(x, __uint_as_float(0x3fb8aa3bu), shift);
    float n = __fsub_rn(z, shift);
    float b = __fmaf_rn(-n, __uint_as_float(0x35bfbe8eu), __fmaf_rn(-n, __uint_as_float(0x3f317200u), x));
    u32 e = __float_as_uint(z) << 23;
    float k = __uint_as_float(e + __float_as_uint(1.0f));
    float u = __fmul_rn(b, b);
    float j = __fmaf_rn(__fmaf_rn(__fmaf_rn(__uint_as_float(0x3c072010u), b, __uint_as_float(0x3d2b9f17u)), u,
                                  __fmaf_rn(__uint_as_float(0x3e2aaf33u), b, __uint_as_float(0x3efffedbu))),
                        u, __fmul_rn(__uint_as_float(0x3f7ffff6u), b));
    if (fabsf(n) <= 126.0f) return __fmaf_rn(j, k, k);
    u32 g = n <= 0.0f ? 0x82000000u : 0u;
    float s1 = __uint_as_float(g + 0x7f000000u);
    float s2 = __uint_as_float(e - g);
    if (fabsf(n) > 192.0f) return __fmul_rn(s1, s1);
    return __fmul_rn(__fmaf_rn(s2, j, s2), s1);
}

// glibc's expf (the CPU's f32::exp), step for step: x = (k + r) ln2 / 32,
// 2^(k/32) from a table, 2^(r/32) by a cubic, all in f64. Rounding f64's
// exp to f32 instead differs from it for about 1 input in 10^4.
// exp2_tab[i]: the bits of 2^(i/32) less i << 47.
__device__ const u64 exp2_tab[32] = {
    0x3ff0000000000000ull, 0x3fefd9b0d3158574ull, 0x3fefb5586cf9890full, 0x3fef9301d0125b51ull,
    0x3fef72b83c7d517bull, 0x3fef54873168b9aaull, 0x3fef387a6e756238ull, 0x3fef1e9df51fdee1ull,
    0x3fef06fe0a31b715ull, 0x3feef1a7373aa9cbull, 0x3feedea64c123422ull, 0x3feece086061892dull,
    0x3feebfdad5362a27ull, 0x3feeb42b569d4f82ull, 0x3feeab07dd485429ull, 0x3feea47eb03a5585ull,
    0x3feea09e667f3bcdull, 0x3fee9f75e8ec5f74ull, 0x3feea11473eb0187ull, 0x3feea589994cce13ull,
    0x3feeace5422aa0dbull, 0x3feeb737b0cdc5e5ull, 0x3feec49182a3f090ull, 0x3feed503b23e255dull,
    0x3feee89f995ad3adull, 0x3feeff76f2fb5e47ull, 0x3fef199bdd85529cull, 0x3fef3720dcef9069ull,
    0x3fef5818dcfba487ull, 0x3fef7c97337b9b5full, 0x3fefa4afa2a490daull, 0x3fefd0765b6e4540ull,
};

__device__ __forceinline__ float libm_expf(float x) {
    if (fabsf(x) >= 88.0f || x != x) {
        if (x == NEG_INF) return 0.0f;
        if (x != x || fabsf(x) == __int_as_float(0x7f800000)) return x + x;
        if (x > 88.72283172607421875f) return __int_as_float(0x7f800000);
        if (x < -103.972076416015625f) return 0.0f;
    }
    const double inv_ln2_n = 0x1.71547652b82fep+0 * 32, shift = 0x1.8p+52;
    const double c0 = 0x1.c6af84b912394p-5 / 32 / 32 / 32, c1 = 0x1.ebfce50fac4f3p-3 / 32 / 32,
                 c2 = 0x1.62e42ff0c52d6p-1 / 32;
    double z = __dmul_rn(inv_ln2_n, (double)x);
    double kd = __dadd_rn(z, shift);
    u64 ki = (u64)__double_as_longlong(kd);
    kd = __dsub_rn(kd, shift);
    double r = __dsub_rn(z, kd);
    double s = __longlong_as_double((long long)(exp2_tab[ki % 32] + (ki << 47)));
    double y = __fma_rn(__fma_rn(c0, r, c1), __dmul_rn(r, r), __fma_rn(c2, r, 1.0));
    return (float)__dmul_rn(y, s);
}

// Activation quantization as the CPU backend (ggml's x86 quantizers) does
// it for each weight type, so that the integer parts of every dot match
// it; divisions are IEEE (__fdiv_rn) whatever the fast-math flags. A warp
// quantizes one block; xd gets, per 32 values, the scale and a second
// number (see blocks.cuh). Modes, as the launchers number them:
#define QUANT_NONE 0
#define QUANT_Q8_0 1
#define QUANT_Q8_1 2
#define QUANT_Q8_K 3

// Q8_0 / Q8_1, lane l holding value l of 32: d = amax/127 rounded to f16,
// q = round-half-even(x * 127/amax); xd.y is the sum of the q (Q8_0) or
// f16(d * sum) (Q8_1).
__device__ __forceinline__ void quantize_block_q8_0(float v, i8* xq, float2* xd, bool q8_1) {
    int lane = threadIdx.x % WARP_SIZE;
    float amax = warp_max(fabsf(v));
    float d = __fdiv_rn(amax, 127.0f);
    float id = amax != 0.0f ? __fdiv_rn(127.0f, amax) : 0.0f;
    int q = max(-128, min(127, __float2int_rn(v * id)));
    xq[lane] = (i8)q;
    int sum = (int)warp_sum((float)q);
    if (lane == 0) {
        float dh = h2f(f2h(d));
        *xd = make_float2(dh, q8_1 ? h2f(f2h(d * (float)sum)) : (float)sum);
    }
}

// Q8_K, lane l holding values l + 32 i of 256: the value of largest
// magnitude (the first such) maps to -127; d = 1/iscale in f32; xd gets d
// and each block of 32's sum of q.
__device__ __forceinline__ void quantize_block_q8_k(const float* v, i8* xq, float2* xd) {
    int lane = threadIdx.x % WARP_SIZE;
    float amax = 0.0f, mx = 0.0f;
    int at = 0;
#pragma unroll
    for (int i = 0; i < 8; i++) {
        if (fabsf(v[i]) > amax) {
            amax = fabsf(v[i]);
            mx = v[i];
            at = 32 * i + lane;
        }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        float a2 = __shfl_xor_sync(FULL_MASK, amax, o);
        float m2 = __shfl_xor_sync(FULL_MASK, mx, o);
        int at2 = __shfl_xor_sync(FULL_MASK, at, o);
        if (a2 > amax || (a2 == amax && at2 < at)) {
            amax = a2;
            mx = m2;
            at = at2;
        }
    }
    if (amax == 0.0f) {
#pragma unroll
        for (int i = 0; i < 8; i++) xq[32 * i + lane] = 0;
        if (lane < 8) xd[lane] = make_float2(0.0f, 0.0f);
        return;
    }
    float iscale = __fdiv_rn(-127.0f, mx);
    float d = __fdiv_rn(1.0f, iscale);
#pragma unroll
    for (int i = 0; i < 8; i++) {
        int q = min(127, __float2int_rn(iscale * v[i]));
        xq[32 * i + lane] = (i8)q;
        float sum = warp_sum((float)q);
        if (lane == 0) xd[i] = make_float2(d, sum);
    }
}

// Values per quantization block of a mode.
__device__ __forceinline__ int quant_block_len(int mode) { return mode == QUANT_Q8_K ? 256 : 32; }

// Block `b` of a row's run at `o`, where `value(j)` gives value j of the
// run: written as f32 to o and quantized to xq/xd (offsets of the same run)
// in `mode`, not QUANT_NONE. One warp per call.
template <typename F>
__device__ __forceinline__ void emit_block(int mode, int b, float* o, i8* xq, float2* xd, F value) {
    int lane = threadIdx.x % WARP_SIZE;
    if (mode == QUANT_Q8_K) {
        float v[8];
#pragma unroll
        for (int i = 0; i < 8; i++) {
            int j = 256 * b + 32 * i + lane;
            v[i] = value(j);
            o[j] = v[i];
        }
        quantize_block_q8_k(v, xq + 256 * b, xd + 8 * b);
    } else {
        int j = 32 * b + lane;
        float v = value(j);
        o[j] = v;
        quantize_block_q8_0(v, xq + 32 * b, xd + b, mode == QUANT_Q8_1);
    }
}
