// GGUF block formats as the kernels read them: element-wise dequantization
// (embedding rows, weights for the tensor-core prefill) and dot products of
// one "unit" of a weight row with int8 activations quantized as the CPU
// backend (and ggml's) quantizes them for that weight type: xq holds the
// int8 values, xd per block of 32 the scale and a second number: the sum
// of the block's int8 values (Q8_0, Q8_K) or the f16 s = d * sum (Q8_1).
// Integer parts are exact, so results differ from the CPU's only in the
// order of the float additions.
// A unit is what one lane handles per step: a block of 32 for the legacy
// formats, 64 elements (two sub-blocks sharing their quant bytes) for
// Q4_K/Q5_K, and 4 groups of 16 for Q6_K.

struct BlockQ4_0 { u16 d; u8 qs[16]; };                 // 18 bytes, 32 weights
struct BlockQ4_1 { u16 d, m; u8 qs[16]; };              // 20 bytes
struct BlockQ5_0 { u16 d; u8 qh[4]; u8 qs[16]; };       // 22 bytes
struct BlockQ5_1 { u16 d, m; u8 qh[4]; u8 qs[16]; };    // 24 bytes
struct BlockQ8_0 { u16 d; i8 qs[32]; };                 // 34 bytes
// K-quants: 256 weights in 8 sub-blocks of 32; 6-bit scales and mins
// packed in 12 bytes (Q4_K, Q5_K), 8-bit scales per 16 (Q6_K).
struct BlockQ4_K { u16 d, dmin; u8 scales[12]; u8 qs[128]; };              // 144 bytes
struct BlockQ5_K { u16 d, dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]; };   // 176 bytes
struct BlockQ6_K { u8 ql[128]; u8 qh[64]; i8 scales[16]; u16 d; };         // 210 bytes

__device__ __forceinline__ void scale_min_k4(int j, const u8* q, int* sc, int* m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

// The same from the 12 scale bytes held in three words (a block's header
// read with one 16-byte load, rather than a load per byte).
__device__ __forceinline__ void scale_min_k4_regs(int j, u32 s0, u32 s1, u32 s2, int* sc, int* m) {
    auto byte = [&](int i) { return (int)(((i < 4 ? s0 : i < 8 ? s1 : s2) >> (8 * (i % 4))) & 0xFF); };
    if (j < 4) {
        *sc = byte(j) & 63;
        *m = byte(j + 4) & 63;
    } else {
        *sc = (byte(j + 4) & 0xF) | ((byte(j - 4) >> 6) << 4);
        *m = (byte(j + 4) >> 4) | ((byte(j) >> 6) << 4);
    }
}

// ---- element j of a row, dequantized -------------------------------------

__device__ __forceinline__ float elem_q4_0(const u8* row, int j) {
    const BlockQ4_0* b = (const BlockQ4_0*)row + j / 32;
    int i = j % 32;
    int q = i < 16 ? (b->qs[i] & 0xF) : (b->qs[i - 16] >> 4);
    return h2f(b->d) * (float)(q - 8);
}

__device__ __forceinline__ float elem_q4_1(const u8* row, int j) {
    const BlockQ4_1* b = (const BlockQ4_1*)row + j / 32;
    int i = j % 32;
    int q = i < 16 ? (b->qs[i] & 0xF) : (b->qs[i - 16] >> 4);
    return h2f(b->d) * (float)q + h2f(b->m);
}

__device__ __forceinline__ int q5_value(const u8* qs, const u8* qh, int i) {
    u32 h = (u32)qh[0] | ((u32)qh[1] << 8) | ((u32)qh[2] << 16) | ((u32)qh[3] << 24);
    int lo = i < 16 ? (qs[i] & 0xF) : (qs[i - 16] >> 4);
    return lo | (((h >> i) & 1) << 4);
}

__device__ __forceinline__ float elem_q5_0(const u8* row, int j) {
    const BlockQ5_0* b = (const BlockQ5_0*)row + j / 32;
    return h2f(b->d) * (float)(q5_value(b->qs, b->qh, j % 32) - 16);
}

__device__ __forceinline__ float elem_q5_1(const u8* row, int j) {
    const BlockQ5_1* b = (const BlockQ5_1*)row + j / 32;
    return h2f(b->d) * (float)q5_value(b->qs, b->qh, j % 32) + h2f(b->m);
}

__device__ __forceinline__ float elem_q8_0(const u8* row, int j) {
    const BlockQ8_0* b = (const BlockQ8_0*)row + j / 32;
    return h2f(b->d) * (float)b->qs[j % 32];
}

// Q4_K and Q5_K: element i of the block; qh is null for Q4_K.
__device__ __forceinline__ float elem_k4(u16 d, u16 dmin, const u8* scales, const u8* qs, const u8* qh, int i) {
    int c = i / 64, l = i % 32, sub = i / 32;
    int sc, m;
    scale_min_k4(sub, scales, &sc, &m);
    u8 byte = qs[32 * c + l];
    int q = (i % 64) < 32 ? (byte & 0xF) : (byte >> 4);
    if (qh) q |= ((qh[l] >> sub) & 1) << 4;
    return h2f(d) * (float)(sc * q) - h2f(dmin) * (float)m;
}

__device__ __forceinline__ float elem_q4_k(const u8* row, int j) {
    const BlockQ4_K* b = (const BlockQ4_K*)row + j / 256;
    return elem_k4(b->d, b->dmin, b->scales, b->qs, (const u8*)0, j % 256);
}

__device__ __forceinline__ float elem_q5_k(const u8* row, int j) {
    const BlockQ5_K* b = (const BlockQ5_K*)row + j / 256;
    return elem_k4(b->d, b->dmin, b->scales, b->qs, b->qh, j % 256);
}

// Q6_K rows are repacked at upload so that every load is aligned (its
// 210-byte blocks are only 2-byte aligned): for a row of nb blocks, each
// block's ql and qh (192 bytes), then each block's 16 scales, then each
// block's d.
struct Q6KRow {
    const u8* quants;  // ql[128] then qh[64], per block
    const i8* scales;  // 16 per block
    const u16* d;      // one per block
    __device__ __forceinline__ Q6KRow(const u8* row, int k) {
        int nb = k / 256;
        quants = row;
        scales = (const i8*)(row + 192 * nb);
        d = (const u16*)(row + 208 * nb);
    }
};

__device__ __forceinline__ float elem_q6_k(const u8* row, int j, int k) {
    Q6KRow r(row, k);
    int b = j / 256;
    // Two halves of 128; in each, position l of 32 gives elements
    // l, l+32, l+64, l+96 from ql[l], ql[l+32] and the 2-bit pairs of qh[l].
    int i = j % 256, n = i / 128, g = (i % 128) / 32, l = i % 32;
    const u8* ql = r.quants + 192 * b + 64 * n;
    u8 h = r.quants[192 * b + 128 + 32 * n + l];
    int lo = (g & 1) ? ql[l + 32] : ql[l];
    lo = (g & 2) ? (lo >> 4) : (lo & 0xF);
    int q = (lo | (((h >> (2 * g)) & 3) << 4)) - 32;
    return h2f(r.d[b]) * (float)r.scales[16 * b + 8 * n + l / 16 + 2 * g] * (float)q;
}

// ---- units of a row against int8 activations ------------------------------

// 16 int8 values (4 ints) of activation row r at element e.
#define XQ4(r, e) (*(const int4*)(xq + (size_t)(r) * k + (e)))

// Sum of the products of 32 int8 weights (lo: the first 16, hi: the last
// 16, four per int) with the 32 activations a (first 16) and c (last 16).
__device__ __forceinline__ int dot32(const int* lo, const int* hi, int4 a, int4 c) {
    int s = 0;
    s = dp4a(lo[0], a.x, s); s = dp4a(lo[1], a.y, s); s = dp4a(lo[2], a.z, s); s = dp4a(lo[3], a.w, s);
    s = dp4a(hi[0], c.x, s); s = dp4a(hi[1], c.y, s); s = dp4a(hi[2], c.z, s); s = dp4a(hi[3], c.w, s);
    return s;
}

// Q4_0 / Q4_1: 16 bytes of nibbles, the low ones the block's first 16
// weights. `min` is null for Q4_0 (offset 8, against Q8_0).
template <int R>
__device__ __forceinline__ void dot_q4(const u8* qs, float d, const u16* min, int u, const i8* xq,
                                       const float2* xd, int k, float* acc) {
    int lo[4], hi[4];
#pragma unroll
    for (int i = 0; i < 4; i++) {
        int v = load_u32_a2(qs + 4 * i);
        lo[i] = v & 0x0F0F0F0F;
        hi[i] = (v >> 4) & 0x0F0F0F0F;
    }
#pragma unroll
    for (int r = 0; r < R; r++) {
        int s = dot32(lo, hi, XQ4(r, 32 * u), XQ4(r, 32 * u + 16));
        float2 ds = xd[(size_t)r * (k / 32) + u];
        if (min) {
            acc[r] += d * ds.x * (float)s + h2f(*min) * ds.y;
        } else {
            acc[r] += d * ds.x * (float)(s - 8 * (int)ds.y);
        }
    }
}

template <int R>
__device__ __forceinline__ void dot_q4_0(const u8* row, int u, const i8* xq, const float2* xd, int k, float* acc) {
    const BlockQ4_0* b = (const BlockQ4_0*)row + u;
    dot_q4<R>(b->qs, h2f(b->d), (const u16*)0, u, xq, xd, k, acc);
}

template <int R>
__device__ __forceinline__ void dot_q4_1(const u8* row, int u, const i8* xq, const float2* xd, int k, float* acc) {
    const BlockQ4_1* b = (const BlockQ4_1*)row + u;
    dot_q4<R>(b->qs, h2f(b->d), &b->m, u, xq, xd, k, acc);
}

// Bit 4 of each of four 5-bit values, from 4 bits of qh.
__device__ __forceinline__ int spread4(u32 bits) {
    return (int)(((bits & 1) << 4) | ((bits & 2) << 11) | ((bits & 4) << 18) | ((bits & 8) << 25));
}

// Q5_0 and Q5_1 share their unit: Q5_0 (offset 16) against Q8_0, Q5_1
// (min m) against Q8_1.
template <int R>
__device__ __forceinline__ void dot_q5(const u8* qs, const u8* qh, float d, float m, int offset, int u,
                                       const i8* xq, const float2* xd, int k, float* acc) {
    u32 h = (u32)load_u32_a2(qh);
    int lo[4], hi[4];
#pragma unroll
    for (int i = 0; i < 4; i++) {
        int v = load_u32_a2(qs + 4 * i);
        lo[i] = (v & 0x0F0F0F0F) | spread4(h >> (4 * i));
        hi[i] = ((v >> 4) & 0x0F0F0F0F) | spread4(h >> (16 + 4 * i));
    }
#pragma unroll
    for (int r = 0; r < R; r++) {
        int s = dot32(lo, hi, XQ4(r, 32 * u), XQ4(r, 32 * u + 16));
        float2 ds = xd[(size_t)r * (k / 32) + u];
        if (offset) {
            acc[r] += d * ds.x * (float)(s - offset * (int)ds.y);
        } else {
            acc[r] += d * ds.x * (float)s + m * ds.y;
        }
    }
}

template <int R>
__device__ __forceinline__ void dot_q5_0(const u8* row, int u, const i8* xq, const float2* xd, int k, float* acc) {
    const BlockQ5_0* b = (const BlockQ5_0*)row + u;
    dot_q5<R>(b->qs, b->qh, h2f(b->d), 0.0f, 16, u, xq, xd, k, acc);
}

template <int R>
__device__ __forceinline__ void dot_q5_1(const u8* row, int u, const i8* xq, const float2* xd, int k, float* acc) {
    const BlockQ5_1* b = (const BlockQ5_1*)row + u;
    dot_q5<R>(b->qs, b->qh, h2f(b->d), h2f(b->m), 0, u, xq, xd, k, acc);
}

template <int R>
__device__ __forceinline__ void dot_q8_0(const u8* row, int u, const i8* xq, const float2* xd, int k, float* acc) {
    const BlockQ8_0* b = (const BlockQ8_0*)row + u;
    float d = h2f(b->d);
    int v[8];
#pragma unroll
    for (int i = 0; i < 8; i++) v[i] = load_u32_a2((const u8*)b->qs + 4 * i);
#pragma unroll
    for (int r = 0; r < R; r++) {
        int s = dot32(v, v + 4, XQ4(r, 32 * u), XQ4(r, 32 * u + 16));
        acc[r] += d * xd[(size_t)r * (k / 32) + u].x * (float)s;
    }
}

// Q4_K and Q5_K: unit u is chunk u % 4 (64 weights: sub-blocks 2c, 2c+1,
// the low and high nibbles of the same 32 bytes) of block u / 4, whose
// 16-byte header (d, dmin, 12 scale bytes) is in hd.
template <int R>
__device__ __forceinline__ void dot_k4(uint4 hd, const int* q, const int* qh, int u, const i8* xq,
                                       const float2* xd, int k, float* acc) {
    int c = u % 4;
    int sc0, m0, sc1, m1;
    scale_min_k4_regs(2 * c, hd.y, hd.z, hd.w, &sc0, &m0);
    scale_min_k4_regs(2 * c + 1, hd.y, hd.z, hd.w, &sc1, &m1);
    float d = h2f((u16)(hd.x & 0xFFFF)), dmin = h2f((u16)(hd.x >> 16));
    int lo[8], hi[8];
#pragma unroll
    for (int i = 0; i < 8; i++) {
        lo[i] = q[i] & 0x0F0F0F0F;
        hi[i] = (q[i] >> 4) & 0x0F0F0F0F;
        if (qh) {
            lo[i] |= ((qh[i] >> (2 * c)) & 0x01010101) << 4;
            hi[i] |= ((qh[i] >> (2 * c + 1)) & 0x01010101) << 4;
        }
    }
    int blk = 2 * u;  // index of the first activation block of 32
#pragma unroll
    for (int r = 0; r < R; r++) {
        int s0 = dot32(lo, lo + 4, XQ4(r, 32 * blk), XQ4(r, 32 * blk + 16));
        int s1 = dot32(hi, hi + 4, XQ4(r, 32 * blk + 32), XQ4(r, 32 * blk + 48));
        // Q8_K: one scale per 256, so both blocks' xd carry the same d.
        float2 d0 = xd[(size_t)r * (k / 32) + blk], d1 = xd[(size_t)r * (k / 32) + blk + 1];
        int dots = sc0 * s0 + sc1 * s1, mins = m0 * (int)d0.y + m1 * (int)d1.y;
        acc[r] += d * d0.x * (float)dots - dmin * d0.x * (float)mins;
    }
}

// 144- and 176-byte blocks keep every block and its qs 16-byte aligned.
template <int R>
__device__ __forceinline__ void dot_q4_k(const u8* row, int u, const i8* xq, const float2* xd, int k, float* acc) {
    const u8* b = row + (u / 4) * 144;
    const int4* p = (const int4*)(b + 16 + 32 * (u % 4));
    uint4 hd = *(const uint4*)b;
    int4 w0 = p[0], w1 = p[1];
    int q[8] = {w0.x, w0.y, w0.z, w0.w, w1.x, w1.y, w1.z, w1.w};
    dot_k4<R>(hd, q, (const int*)0, u, xq, xd, k, acc);
}

template <int R>
__device__ __forceinline__ void dot_q5_k(const u8* row, int u, const i8* xq, const float2* xd, int k, float* acc) {
    const u8* b = row + (u / 4) * 176;
    const int4* p = (const int4*)(b + 48 + 32 * (u % 4));
    const int4* ph = (const int4*)(b + 16);
    uint4 hd = *(const uint4*)b;
    int4 w0 = p[0], w1 = p[1], h0 = ph[0], h1 = ph[1];
    int q[8] = {w0.x, w0.y, w0.z, w0.w, w1.x, w1.y, w1.z, w1.w};
    int qh[8] = {h0.x, h0.y, h0.z, h0.w, h1.x, h1.y, h1.z, h1.w};
    dot_k4<R>(hd, q, qh, u, xq, xd, k, acc);
}

// Q6_K: unit u covers half n = (u / 2) % 2 and positions l in
// [16 i, 16 i + 16) with i = u % 2 of block u / 4: elements l + 32 g of
// the half for g = 0..3, each with its own 8-bit scale.
template <int R>
__device__ __forceinline__ void dot_q6_k(const u8* row, int u, const i8* xq, const float2* xd, int k, float* acc) {
    Q6KRow rw(row, k);
    int b = u / 4, n = (u / 2) % 2, i = u % 2;
    const u8* quants = rw.quants + 192 * b;
    int4 a4 = *(const int4*)(quants + 64 * n + 16 * i);
    int4 c4 = *(const int4*)(quants + 64 * n + 32 + 16 * i);
    int4 h4 = *(const int4*)(quants + 128 + 32 * n + 16 * i);
    uint4 sc4 = *(const uint4*)(rw.scales + 16 * b);
    int av[4] = {a4.x, a4.y, a4.z, a4.w}, cv[4] = {c4.x, c4.y, c4.z, c4.w}, hv[4] = {h4.x, h4.y, h4.z, h4.w};
    int q[4][4];
#pragma unroll
    for (int w = 0; w < 4; w++) {
        int a = av[w], c = cv[w], h = hv[w];
        q[0][w] = (a & 0x0F0F0F0F) | ((h & 0x03030303) << 4);
        q[1][w] = (c & 0x0F0F0F0F) | (((h >> 2) & 0x03030303) << 4);
        q[2][w] = ((a >> 4) & 0x0F0F0F0F) | (((h >> 4) & 0x03030303) << 4);
        q[3][w] = ((c >> 4) & 0x0F0F0F0F) | (((h >> 6) & 0x03030303) << 4);
    }
    float d = h2f(rw.d[b]);
    // Scale 8n + i + 2g of the block's 16: byte i + 2g of word 2n or 2n + 1.
    u32 s_lo = n ? sc4.z : sc4.x, s_hi = n ? sc4.w : sc4.y;
    int sc[4];
#pragma unroll
    for (int g = 0; g < 4; g++) {
        int byte = i + 2 * g;
        sc[g] = (int)(i8)(((byte < 4 ? s_lo : s_hi) >> (8 * (byte % 4))) & 0xFF);
    }
    int blk = b * 8 + 4 * n;  // activation block of group 0
#pragma unroll
    for (int r = 0; r < R; r++) {
        int sum = 0;
#pragma unroll
        for (int g = 0; g < 4; g++) {
            int4 a = XQ4(r, 32 * (blk + g) + 16 * i);
            // Values are stored +32: subtract 32 * (sum of the activations).
            int s = 0, t = 0;
            s = dp4a(q[g][0], a.x, s); s = dp4a(q[g][1], a.y, s); s = dp4a(q[g][2], a.z, s); s = dp4a(q[g][3], a.w, s);
            t = dp4a(0x20202020, a.x, t); t = dp4a(0x20202020, a.y, t); t = dp4a(0x20202020, a.z, t); t = dp4a(0x20202020, a.w, t);
            sum += sc[g] * (s - t);
        }
        acc[r] += d * xd[(size_t)r * (k / 32) + blk].x * (float)sum;
    }
}
