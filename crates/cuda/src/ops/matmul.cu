// Matrix-vector products for up to 8 activation rows (decode), and the
// conversions around cuBLAS for longer batches (prefill).
//
// GEMV: one warp per weight row; lane `l` takes units l, l + 32, ... of the
// row and dots each with every activation row, so each weight byte is read
// once per call whatever the number of rows. Quantized weights are dotted
// with int8 activations (dp4a); f16, bf16 and f32 weights with f32 ones.

#define GEMV_WARPS 4

// ggml type ids.
#define T_F32 0
#define T_F16 1
#define T_Q4_0 2
#define T_Q4_1 3
#define T_Q5_0 6
#define T_Q5_1 7
#define T_Q8_0 8
#define T_Q4_K 12
#define T_Q5_K 13
#define T_Q6_K 14
#define T_BF16 30

template <int T>
__device__ __forceinline__ float elem(const u8* row, int j, int k) {
    switch (T) {
        case T_F32: return ((const float*)row)[j];
        case T_F16: return h2f(((const u16*)row)[j]);
        case T_BF16: return bf2f(((const u16*)row)[j]);
        case T_Q4_0: return elem_q4_0(row, j);
        case T_Q4_1: return elem_q4_1(row, j);
        case T_Q5_0: return elem_q5_0(row, j);
        case T_Q5_1: return elem_q5_1(row, j);
        case T_Q8_0: return elem_q8_0(row, j);
        case T_Q4_K: return elem_q4_k(row, j);
        case T_Q5_K: return elem_q5_k(row, j);
        default: return elem_q6_k(row, j, k);
    }
}

// Elements per unit (see blocks.cuh).
template <int T>
__device__ __forceinline__ int unit_len() {
    return (T == T_Q4_K || T == T_Q5_K || T == T_Q6_K) ? 64 : (T == T_F32 ? 4 : (T == T_F16 || T == T_BF16) ? 8 : 32);
}

template <int T, int R>
__device__ __forceinline__ void dot_unit(const u8* row, int u, const i8* xq, const float2* xd, int k, float* acc) {
    switch (T) {
        case T_Q4_0: dot_q4_0<R>(row, u, xq, xd, k, acc); break;
        case T_Q4_1: dot_q4_1<R>(row, u, xq, xd, k, acc); break;
        case T_Q5_0: dot_q5_0<R>(row, u, xq, xd, k, acc); break;
        case T_Q5_1: dot_q5_1<R>(row, u, xq, xd, k, acc); break;
        case T_Q8_0: dot_q8_0<R>(row, u, xq, xd, k, acc); break;
        case T_Q4_K: dot_q4_k<R>(row, u, xq, xd, k, acc); break;
        case T_Q5_K: dot_q5_k<R>(row, u, xq, xd, k, acc); break;
        default: dot_q6_k<R>(row, u, xq, xd, k, acc); break;
    }
}

// An activation as the CPU rounds it for a dot with weights of type T.
template <int T>
__device__ __forceinline__ float act(float x) {
    return T == T_F16 ? h2f(f2h(x)) : T == T_BF16 ? bf2f(f2bf(x)) : x;
}

// Units of 8 f16/bf16 weights (one 16-byte load) or 4 f32 weights.
template <int T, int R>
__device__ __forceinline__ void dot_unit_float(const u8* row, int u, const float* x, int k, float* acc) {
    float w[8];
    const int len = T == T_F32 ? 4 : 8;
    if (T == T_F32) {
        float4 v = ((const float4*)row)[u];
        w[0] = v.x; w[1] = v.y; w[2] = v.z; w[3] = v.w;
    } else {
        uint4 v = ((const uint4*)row)[u];
        u32 p[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int i = 0; i < 4; i++) {
            u16 lo = (u16)(p[i] & 0xFFFF), hi = (u16)(p[i] >> 16);
            w[2 * i] = T == T_F16 ? h2f(lo) : bf2f(lo);
            w[2 * i + 1] = T == T_F16 ? h2f(hi) : bf2f(hi);
        }
    }
#pragma unroll
    for (int r = 0; r < R; r++) {
        const float4* xr = (const float4*)(x + (size_t)r * k + (size_t)u * len);
        float4 a = xr[0];
        float s = w[0] * act<T>(a.x) + w[1] * act<T>(a.y) + w[2] * act<T>(a.z) + w[3] * act<T>(a.w);
        if (len == 8) {
            float4 b = xr[1];
            s += w[4] * act<T>(b.x) + w[5] * act<T>(b.y) + w[6] * act<T>(b.z) + w[7] * act<T>(b.w);
        }
        acc[r] += s;
    }
}

// Weight rows per warp for R activation rows: a unit's activations,
// loaded once, serve them all, and their weight loads are in flight
// together (the loads, not DRAM, bound a warp with one row).
#define GEMV_WEIGHT_ROWS(R) ((R) == 1 ? 4 : (R) == 2 ? 2 : 1)

// out[r][row] = sum over the row of w * x[r] (+ bias[row] where a bias is
// given), for R activation rows; up to three weights of type T and the same
// row length share a launch (Q, K, V; gate, up), their rows numbered one
// after the other: w1's after w0's.
// Each warp takes WR consecutive rows.
template <int T, int R, int WR>
__device__ __forceinline__ void gemv(const u8* w0, const u8* w1, const u8* w2, u64 row_bytes, const float* b0,
                                     const float* b1, const float* b2, float* o0, float* o1, float* o2, int n0,
                                     int n1, int n2, const float* x, const i8* xq, const float2* xd, int k) {
    follow_predecessor();
    int first = (blockIdx.x * GEMV_WARPS + threadIdx.x / WARP_SIZE) * WR;
    int lane = threadIdx.x % WARP_SIZE;
    if (first >= n0 + n1 + n2) return;
    const u8* wr[WR];
    const float* bias[WR];
    float* out[WR];
    int n[WR], row[WR];
#pragma unroll
    for (int i = 0; i < WR; i++) {
        int at = first + i;
        bool in1 = at >= n0, in2 = at >= n0 + n1, past = at >= n0 + n1 + n2;
        // A row past the end repeats row 0 of w0 and is not stored.
        row[i] = past ? -1 : in2 ? at - n0 - n1 : in1 ? at - n0 : at;
        n[i] = in2 ? n2 : in1 ? n1 : n0;
        out[i] = in2 ? o2 : in1 ? o1 : o0;
        bias[i] = in2 ? b2 : in1 ? b1 : b0;
        wr[i] = past ? w0 : (in2 ? w2 : in1 ? w1 : w0) + (size_t)row[i] * row_bytes;
    }
    int units = k / unit_len<T>();
    float acc[WR][R];
#pragma unroll
    for (int i = 0; i < WR; i++)
#pragma unroll
        for (int r = 0; r < R; r++) acc[i][r] = 0.0f;
    for (int u = lane; u < units; u += WARP_SIZE) {
#pragma unroll
        for (int i = 0; i < WR; i++) {
            if (T == T_F32 || T == T_F16 || T == T_BF16) {
                dot_unit_float<T, R>(wr[i], u, x, k, acc[i]);
            } else {
                dot_unit<T, R>(wr[i], u, xq, xd, k, acc[i]);
            }
        }
    }
#pragma unroll
    for (int i = 0; i < WR; i++) {
#pragma unroll
        for (int r = 0; r < R; r++) {
            float v = warp_sum(acc[i][r]);
            if (lane == 0 && row[i] >= 0) out[i][(size_t)r * n[i] + row[i]] = bias[i] ? v + bias[i][row[i]] : v;
        }
    }
}

#define GEMV_KERNEL(kname, T, R, WR)                                                                    \
    extern "C" __global__ void __launch_bounds__(GEMV_WARPS * WARP_SIZE)                               \
        kname(const u8* w0, const u8* w1, const u8* w2, u64 row_bytes, const float* b0, const float* b1, \
              const float* b2, float* o0, float* o1, float* o2, int n0, int n1, int n2, const float* x,  \
              const i8* xq, const float2* xd, int k) {                                                   \
        gemv<T, R, WR>(w0, w1, w2, row_bytes, b0, b1, b2, o0, o1, o2, n0, n1, n2, x, xq, xd, k);         \
    }
#define GEMV_ROWS(name, T, R) GEMV_KERNEL(gemv_##name##_##R, T, R, GEMV_WEIGHT_ROWS(R))

// Elements j0 .. j0 + 8 of a row (j0 a multiple of 8, so that they share
// their block's scales): the common formats decode the 8 at once, the
// others element by element.
template <int T>
__device__ __forceinline__ void elem8(const u8* row, int j0, int k, float* o) {
    if (T == T_Q4_K || T == T_Q5_K) {
        const u8* blk = row + (j0 / 256) * (T == T_Q4_K ? 144 : 176);
        int i0 = j0 % 256, l0 = i0 % 32, sub = i0 / 32;
        int sc, m;
        scale_min_k4(sub, blk + 4, &sc, &m);
        float d = h2f(*(const u16*)blk), dmin = h2f(*(const u16*)(blk + 2));
        const u8* qs = blk + (T == T_Q4_K ? 16 : 48) + 32 * (i0 / 64) + l0;
        uint2 q = *(const uint2*)qs;
        u32 qw[2] = {q.x, q.y};
        uint2 hq = T == T_Q5_K ? *(const uint2*)(blk + 16 + l0) : make_uint2(0, 0);
        u32 hw[2] = {hq.x, hq.y};
        int shift = (i0 % 64) < 32 ? 0 : 4;
#pragma unroll
        for (int e = 0; e < 8; e++) {
            int v = (qw[e / 4] >> (8 * (e % 4) + shift)) & 0xF;
            if (T == T_Q5_K) v |= ((hw[e / 4] >> (8 * (e % 4) + sub)) & 1) << 4;
            o[e] = d * (float)(sc * v) - dmin * (float)m;
        }
    } else if (T == T_Q6_K) {
        Q6KRow r(row, k);
        int b = j0 / 256, i0 = j0 % 256, n = i0 / 128, g = (i0 % 128) / 32, l0 = i0 % 32;
        const u8* ql = r.quants + 192 * b + 64 * n + ((g & 1) ? 32 : 0) + l0;
        const u8* qh = r.quants + 192 * b + 128 + 32 * n + l0;
        float d = h2f(r.d[b]) * (float)r.scales[16 * b + 8 * n + l0 / 16 + 2 * g];
        uint2 lv = *(const uint2*)ql, hv = *(const uint2*)qh;
#pragma unroll
        for (int e = 0; e < 8; e++) {
            int lb = (int)(((e < 4 ? lv.x : lv.y) >> (8 * (e % 4))) & 0xFF);
            int hb = (int)(((e < 4 ? hv.x : hv.y) >> (8 * (e % 4))) & 0xFF);
            int lo = (g & 2) ? (lb >> 4) : (lb & 0xF);
            o[e] = d * (float)((lo | (((hb >> (2 * g)) & 3) << 4)) - 32);
        }
    } else if (T == T_Q8_0) {
        const u8* blk = row + (j0 / 32) * 34;
        float d = h2f((u16)(blk[0] | (blk[1] << 8)));
#pragma unroll
        for (int e = 0; e < 8; e++) o[e] = d * (float)(i8)blk[2 + j0 % 32 + e];
    } else {
#pragma unroll
        for (int e = 0; e < 8; e++) o[e] = elem<T>(row, j0 + e, k);
    }
}

// Dequantizes rows [0, n) of a weight to f16 (the tensor-core prefill's
// operand), 8 elements per thread and one 16-byte store; blockIdx.x is
// the row. And gathers token rows to f32 (the embedding).
#define CONVERT(name, T)                                                                              \
    extern "C" __global__ void dequant_f16_##name(const u8* w, u64 row_bytes, u16* out, int k) {      \
        follow_predecessor();                                                                         \
        int j0 = 8 * (blockIdx.y * blockDim.x + threadIdx.x);                                         \
        if (j0 >= k) return;                                                                          \
        const u8* row = w + blockIdx.x * row_bytes;                                                   \
        u16* o16 = out + (u64)blockIdx.x * k + j0;                                                    \
        if (k % 8 != 0) { /* f32 rows of 4n: element by element */                                    \
            for (int e = 0; e < 8 && j0 + e < k; e++) o16[e] = f2h(elem<T>(row, j0 + e, k));            \
            return;                                                                                   \
        }                                                                                             \
        float o[8];                                                                                   \
        elem8<T>(row, j0, k, o);                                                                       \
        u32 p[4];                                                                                     \
        for (int e = 0; e < 4; e++) p[e] = (u32)f2h(o[2 * e]) | ((u32)f2h(o[2 * e + 1]) << 16);       \
        *(uint4*)o16 = make_uint4(p[0], p[1], p[2], p[3]);                                            \
    }                                                                                                 \
    extern "C" __global__ void embed_##name(const u8* w, u64 row_bytes, const u32* tokens, float* out, \
                                            int k, int rows) {                                        \
        follow_predecessor();                                                                         \
        u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;                                           \
        if (i >= (u64)rows * k) return;                                                               \
        u64 r = i / k;                                                                                \
        out[i] = elem<T>(w + (u64)tokens[r] * row_bytes, (int)(i % k), k);                               \
    }

#define WEIGHT_TYPE(name, T)           \
    GEMV_KERNEL(gemv1_##name, T, 1, 1) \
    GEMV_ROWS(name, T, 1)    \
    GEMV_ROWS(name, T, 2)    \
    GEMV_ROWS(name, T, 3)    \
    GEMV_ROWS(name, T, 4)    \
    GEMV_ROWS(name, T, 5)    \
    GEMV_ROWS(name, T, 6)    \
    GEMV_ROWS(name, T, 7)    \
    GEMV_ROWS(name, T, 8)    \
    CONVERT(name, T)

WEIGHT_TYPE(f32, T_F32)
WEIGHT_TYPE(f16, T_F16)
WEIGHT_TYPE(bf16, T_BF16)
WEIGHT_TYPE(q4_0, T_Q4_0)
WEIGHT_TYPE(q4_1, T_Q4_1)
WEIGHT_TYPE(q5_0, T_Q5_0)
WEIGHT_TYPE(q5_1, T_Q5_1)
WEIGHT_TYPE(q8_0, T_Q8_0)
WEIGHT_TYPE(q4_k, T_Q4_K)
WEIGHT_TYPE(q5_k, T_Q5_K)
WEIGHT_TYPE(q6_k, T_Q6_K)

// Activations quantized for a weight type (mode: QUANT_* of common.cuh),
// one warp per block, n_blocks blocks.
extern "C" __global__ void quantize(const float* x, i8* xq, float2* xd, u64 n_blocks, int mode) {
    follow_predecessor();
    u64 blk = (u64)blockIdx.x * (blockDim.x / WARP_SIZE) + threadIdx.x / WARP_SIZE;
    if (blk >= n_blocks) return;
    u64 len = quant_block_len(mode);
    int lane = threadIdx.x % WARP_SIZE;
    if (mode == QUANT_Q8_K) {
        float v[8];
#pragma unroll
        for (int i = 0; i < 8; i++) v[i] = x[blk * len + 32 * i + lane];
        quantize_block_q8_k(v, xq + blk * len, xd + blk * 8);
    } else {
        quantize_block_q8_0(x[blk * len + lane], xq + blk * len, xd + blk, mode == QUANT_Q8_1);
    }
}

// The quantized activations back to f16, the cuBLAS operand of the prefill
// (so that prefill sees the same inputs as decode and the CPU).
extern "C" __global__ void dequant_act_f16(const i8* xq, const float2* xd, u16* out, u64 n) {
    follow_predecessor();
    u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = f2h(xd[i / 32].x * (float)xq[i]);
}

// f32 to f16 (mode 0) or bf16 (mode 1), both round-to-nearest-even, as the
// CPU backend converts activations for F16 and BF16 weights.
extern "C" __global__ void f32_to_half(const float* x, u16* out, u64 n, int mode) {
    follow_predecessor();
    u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = mode == 0 ? f2h(x[i]) : f2bf(x[i]);
}
