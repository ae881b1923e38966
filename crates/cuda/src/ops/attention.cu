// Attention over the f16 KV cache, computed as the CPU backend computes it
// (after ggml's CPU flash attention): a sequence's run of 64 rows or more
// through the f32 tiled path, a shorter one through the path that rounds
// Q to f16 and accumulates V in f16 key after key. Both follow the CPU's
// order of operations (fused multiply-adds, f64 sums, ggml's expf), so the
// two backends agree to the last bit here and greedy text does not hinge
// on which one ran.
//
// Rows map positions to cache slots through `slots` (from the row's
// `slot_base`); a row attends to the positions up to its own (and, with a
// window, those less than `window` behind it). Head dimensions are
// multiples of 8, at most DMAX.

#define ATTN_WARPS 4
#define TILE_KV 64
// The f16 path: keys per step (one per lane); ggml pads the cache length
// to 256 and splits one query's keys in two halves from 512.
#define F16_STEP 32
#define KV_PAD 256
#define SPLIT_KV_MIN 512

__device__ __forceinline__ u32 visible_from(u32 pos, int window) {
    return (window > 0 && pos + 1 > (u32)window) ? pos + 1 - (u32)window : 0;
}

// Writes row r's K and V into its slot. One block per row.
extern "C" __global__ void kv_store(const float* k, const float* v, u16* kc, u16* vc, const u32* positions,
                                    const u32* slot_base, const u32* slots, int k_dim, int v_dim) {
    follow_predecessor();
    int r = blockIdx.x;
    u64 s = slots[slot_base[r] + positions[r]];
    for (int j = threadIdx.x; j < k_dim; j += blockDim.x) kc[s * k_dim + j] = f2h(k[(size_t)r * k_dim + j]);
    for (int j = threadIdx.x; j < v_dim; j += blockDim.x) vc[s * v_dim + j] = f2h(v[(size_t)r * v_dim + j]);
}

struct AttnArgs {
    const float* q;
    const u16* kc;
    const u16* vc;
    float* out;
    const u32* positions;
    const u32* slot_base;
    const u32* slots;
    int row0, n_rows, n_head, n_head_kv, dk, dv;
    float kq_scale;
    int window, n_slots;
};

// Copies the cache rows of tile keys [first, end) (key j in slot
// slot_of[j]; `len` values of each, from `head_off`) into dst, rows
// `stride` u32s apart: 16-byte loads, all issued before any store so that
// their latencies overlap.
template <int DMAX>
__device__ __forceinline__ void stage_tile(u32* dst, int stride, const u16* cache, int dim, int head_off, int len,
                                           const u32* slot_of, int first, int end) {
    const int U = DMAX / 8, PER = TILE_KV * U / (ATTN_WARPS * WARP_SIZE);
    uint4 v[PER];
#pragma unroll
    for (int p = 0; p < PER; p++) {
        int i = threadIdx.x + p * ATTN_WARPS * WARP_SIZE, j = i / U, u = i % U;
        if (j >= first && j < end && 8 * u < len)
            v[p] = *(const uint4*)(cache + (u64)slot_of[j] * dim + head_off + 8 * u);
    }
#pragma unroll
    for (int p = 0; p < PER; p++) {
        int i = threadIdx.x + p * ATTN_WARPS * WARP_SIZE, j = i / U, u = i % U;
        if (j >= first && j < end && 8 * u < len) {
            u32* d = dst + j * stride + 4 * u;
            d[0] = v[p].x;
            d[1] = v[p].y;
            d[2] = v[p].z;
            d[3] = v[p].w;
        }
    }
}

// The tiled path for rows [row0, row0 + n_rows) of one sequence; one block
// per RW * ATTN_WARPS rows (RW per warp) and one head. Key tiles of 64
// aligned to absolute positions, each staged once for the block's rows;
// per row: scores by a sequential FMA chain over the head dimension (lane
// = key), the tile's softmax through ggml's expf summed in groups of 8
// into f64, then V accumulated by FMA key after key (lane = dimension).
template <int DMAX, int RW>
__device__ __forceinline__ void attention_tiled(const AttnArgs a) {
    const int RB = ATTN_WARPS * RW, KS = DMAX / 2 + 1, DL = DMAX / WARP_SIZE;
    __shared__ __align__(16) float q_s[RB][DMAX];
    __shared__ float p_s[RB][TILE_KV];
    // One K tile, then that tile's V; rows an odd number of words apart so
    // that lanes reading a word each of different keys hit different banks.
    __shared__ u32 kv_s[TILE_KV * KS];
    __shared__ u32 slot_s[TILE_KV];
    int h = blockIdx.y, warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
    int kh = h / (a.n_head / a.n_head_kv);
    int k_dim = a.n_head_kv * a.dk, v_dim = a.n_head_kv * a.dv;
    int rb0 = a.row0 + blockIdx.x * RB;
    int nr = min(RB, a.row0 + a.n_rows - rb0);
    const u32* seq_slots = a.slots + a.slot_base[rb0];
    for (int i = threadIdx.x; i < nr * a.dk; i += blockDim.x) {
        int rr = i / a.dk, d = i % a.dk;
        q_s[rr][d] = a.q[(size_t)(rb0 + rr) * a.n_head * a.dk + (size_t)h * a.dk + d];
    }
    u32 span_lo = 0xffffffffu, span_hi = 0;
    for (int rr = 0; rr < nr; rr++) {
        u32 pos = a.positions[rb0 + rr];
        span_lo = min(span_lo, visible_from(pos, a.window));
        span_hi = max(span_hi, pos);
    }
    float m[RW], s[RW], acc[RW][DL];
    u32 lo[RW], hi[RW];
    bool live[RW];
#pragma unroll
    for (int w = 0; w < RW; w++) {
        int rr = warp * RW + w;
        live[w] = rr < nr;
        hi[w] = live[w] ? a.positions[rb0 + rr] : 0;
        lo[w] = visible_from(hi[w], a.window);
        m[w] = NEG_INF;
        s[w] = 0.0f;
#pragma unroll
        for (int i = 0; i < DL; i++) acc[w][i] = 0.0f;
    }
    for (u32 start = span_lo / TILE_KV * TILE_KV; start <= span_hi; start += TILE_KV) {
        u32 jlo = max(start, span_lo), jhi = min(start + TILE_KV, span_hi + 1);
        __syncthreads();  // the previous tile's V and slots are no longer read
        for (u32 j = jlo + threadIdx.x; j < jhi; j += blockDim.x) slot_s[j - start] = seq_slots[j];
        __syncthreads();
        stage_tile<DMAX>(kv_s, KS, a.kc, k_dim, kh * a.dk, a.dk, slot_s, jlo - start, jhi - start);
        __syncthreads();
        // A row takes the tiles from the one holding its first key to the
        // one holding its own position (each has a visible key).
        bool on[RW];
        float sc[RW][2];
#pragma unroll
        for (int w = 0; w < RW; w++) {
            on[w] = live[w] && start <= hi[w] && start >= lo[w] / TILE_KV * TILE_KV;
            sc[w][0] = sc[w][1] = 0.0f;
        }
        for (int wd = 0; wd < a.dk / 2; wd++) {
            u32 k0 = kv_s[lane * KS + wd], k1 = kv_s[(lane + 32) * KS + wd];
            float k0a = h2f((u16)k0), k0b = h2f((u16)(k0 >> 16)), k1a = h2f((u16)k1), k1b = h2f((u16)(k1 >> 16));
#pragma unroll
            for (int w = 0; w < RW; w++) {
                float2 qv = *(const float2*)&q_s[warp * RW + w][2 * wd];
                sc[w][0] = __fmaf_rn(k0b, qv.y, __fmaf_rn(k0a, qv.x, sc[w][0]));
                sc[w][1] = __fmaf_rn(k1b, qv.y, __fmaf_rn(k1a, qv.x, sc[w][1]));
            }
        }
#pragma unroll
        for (int w = 0; w < RW; w++) {
            if (!on[w]) continue;
            float* p = p_s[warp * RW + w];
            u32 key0 = start + lane, key1 = key0 + 32;
            // Masked keys weigh exactly zero.
            float p0 = key0 >= lo[w] && key0 <= hi[w] ? __fmul_rn(sc[w][0], a.kq_scale) : NEG_INF;
            float p1 = key1 >= lo[w] && key1 <= hi[w] ? __fmul_rn(sc[w][1], a.kq_scale) : NEG_INF;
            float m_new = fmaxf(m[w], warp_max(fmaxf(p0, p1)));
            if (m_new > m[w]) {
                float ms = libm_expf(__fsub_rn(m[w], m_new));
#pragma unroll
                for (int i = 0; i < DL; i++) acc[w][i] = __fmul_rn(acc[w][i], ms);
                s[w] = __fmul_rn(s[w], ms);
            }
            m[w] = m_new;
            p[lane] = ggml_expf(__fsub_rn(p0, m_new));
            p[lane + 32] = ggml_expf(__fsub_rn(p1, m_new));
            __syncwarp();
            double sum = 0.0;
#pragma unroll
            for (int g = 0; g < TILE_KV / 8; g++) {
                const float* e = p + 8 * g;
                sum += (double)__fadd_rn(__fadd_rn(__fadd_rn(e[4], e[0]), __fadd_rn(e[6], e[2])),
                                         __fadd_rn(__fadd_rn(e[5], e[1]), __fadd_rn(e[7], e[3])));
            }
            s[w] = (float)((double)s[w] + sum);
        }
        __syncthreads();
        stage_tile<DMAX>(kv_s, KS, a.vc, v_dim, kh * a.dv, a.dv, slot_s, jlo - start, jhi - start);
        __syncthreads();
        u32 kb = 0xffffffffu, ke = 0;
#pragma unroll
        for (int w = 0; w < RW; w++) {
            if (!on[w]) continue;
            kb = min(kb, max(start, lo[w]));
            ke = max(ke, min(start + TILE_KV, hi[w] + 1));
        }
        for (u32 key = kb; key < ke; key++) {
            const u16* vr = (const u16*)(kv_s + (key - start) * KS);
            float v[DL];
#pragma unroll
            for (int i = 0; i < DL; i++) {
                int d = lane + WARP_SIZE * i;
                v[i] = d < a.dv ? h2f(vr[d]) : 0.0f;
            }
#pragma unroll
            for (int w = 0; w < RW; w++) {
                if (!on[w] || key < lo[w] || key > hi[w]) continue;
                float pk = p_s[warp * RW + w][key - start];
#pragma unroll
                for (int i = 0; i < DL; i++) acc[w][i] = __fmaf_rn(v[i], pk, acc[w][i]);
            }
        }
    }
#pragma unroll
    for (int w = 0; w < RW; w++) {
        if (!live[w]) continue;
        float inv = s[w] == 0.0f ? 0.0f : __fdiv_rn(1.0f, s[w]);
        float* o = a.out + (size_t)(rb0 + warp * RW + w) * a.n_head * a.dv + (size_t)h * a.dv;
#pragma unroll
        for (int i = 0; i < DL; i++) {
            int d = lane + WARP_SIZE * i;
            if (d < a.dv) o[d] = __fmul_rn(acc[w][i], inv);
        }
    }
}

// The f16 path for rows [row0, row0 + gridDim.x): one block per row and
// head, a group of 4 warps per key chunk (one chunk below 512 padded
// positions, else two, merged in f32 at the end). The recurrence runs key
// after key, so each step of 32 keys has three phases: the scores, each
// by a warp in ggml_vec_dot_f16's order (lane l the accumulator of
// elements l, l + 32, ..., then its pairwise reduction); the softmax
// factors from a running max (lane = key); the f16 accumulation (thread
// = dimension).
template <int DMAX>
__device__ __forceinline__ void attention_f16(const AttnArgs a) {
    const int GT = 4 * WARP_SIZE, DT = DMAX / GT;
    __shared__ u16 q16[DMAX];
    __shared__ __align__(16) u16 v_s[2][F16_STEP][DMAX];
    __shared__ u32 slot_s[2][F16_STEP];
    __shared__ float sc_s[2][F16_STEP], ms_s[2][F16_STEP], vs_s[2][F16_STEP];
    __shared__ float m_s[2], s_s[2], part_acc[2][DMAX];
    int r = a.row0 + blockIdx.x, h = blockIdx.y;
    int c = threadIdx.x / GT, t = threadIdx.x % GT, warp = t / WARP_SIZE, lane = t % WARP_SIZE;
    int kh = h / (a.n_head / a.n_head_kv);
    int k_dim = a.n_head_kv * a.dk, v_dim = a.n_head_kv * a.dv;
    for (int d = threadIdx.x; d < a.dk; d += blockDim.x)
        q16[d] = f2h(a.q[(size_t)r * a.n_head * a.dk + (size_t)h * a.dk + d]);
    u32 pos = a.positions[r], lo = visible_from(pos, a.window);
    u32 n_kv = min((pos + KV_PAD) / KV_PAD * KV_PAD, (u32)a.n_slots);
    bool split = n_kv >= SPLIT_KV_MIN;
    u32 chunk = split ? (n_kv + 1) / 2 : n_kv;
    u32 kend[2], kbeg[2];
    for (int cc = 0; cc < 2; cc++) {
        kend[cc] = (split || cc == 0) ? min((cc + 1) * chunk, pos + 1) : 0;
        kbeg[cc] = min(max(cc * chunk, lo), kend[cc]);
    }
    u32 steps = max(kend[0] - kbeg[0], kend[1] - kbeg[1]);
    steps = (steps + F16_STEP - 1) / F16_STEP;
    if (t == 0) {
        m_s[c] = NEG_INF;
        s_s[c] = 0.0f;
    }
    const u32* seq_slots = a.slots + a.slot_base[r];
    const u16* kbase = a.kc + (u64)kh * a.dk;
    const u16* vbase = a.vc + (u64)kh * a.dv;
    int np = a.dk & ~31;

    float acc[DT];  // f16 values
#pragma unroll
    for (int e = 0; e < DT; e++) acc[e] = 0.0f;
    for (u32 step = 0; step < steps; step++) {
        u32 j0 = kbeg[c] + step * F16_STEP;
        int nb = j0 < kend[c] ? min((u32)F16_STEP, kend[c] - j0) : 0;
        if (t < nb) slot_s[c][t] = seq_slots[j0 + t];
        __syncthreads();
#pragma unroll
        for (int u = 0; u < F16_STEP / 4; u++) {
            int kk = warp + 4 * u;
            if (kk >= nb) break;
            const u16* kr = kbase + (u64)slot_s[c][kk] * k_dim;
            float x = 0.0f;
            for (int i = 0; i < np; i += 32) x = __fmaf_rn(h2f(q16[i + lane]), h2f(kr[i + lane]), x);
            x = __fadd_rn(x, __shfl_down_sync(FULL_MASK, x, 16));
            x = __fadd_rn(x, __shfl_down_sync(FULL_MASK, x, 8));
            x = __fadd_rn(x, __shfl_down_sync(FULL_MASK, x, 4));
            x = __fadd_rn(x, __shfl_down_sync(FULL_MASK, x, 1));
            x = __fadd_rn(x, __shfl_down_sync(FULL_MASK, x, 2));
            if (lane == 0) {
                double sum = (double)x;
                for (int i = np; i < a.dk; i++) sum += (double)__fmul_rn(h2f(q16[i]), h2f(kr[i]));
                sc_s[c][kk] = __fmul_rn((float)sum, a.kq_scale);
            }
        }
        for (int i = t; i < nb * (a.dv / 2); i += GT) {
            int tt = i / (a.dv / 2), w = i % (a.dv / 2);
            ((u32*)v_s[c][tt])[w] = ((const u32*)(vbase + (u64)slot_s[c][tt] * v_dim))[w];
        }
        __syncthreads();
        if (warp == 0 && nb > 0) {
            float m = m_s[c], score = lane < nb ? sc_s[c][lane] : NEG_INF;
            // The running max before each key: of m and the earlier scores.
            float incl = score;
#pragma unroll
            for (int o = 1; o < WARP_SIZE; o <<= 1) {
                float y = __shfl_up_sync(FULL_MASK, incl, o);
                if (lane >= o) incl = fmaxf(incl, y);
            }
            float before = __shfl_up_sync(FULL_MASK, incl, 1);
            before = lane == 0 ? m : fmaxf(m, before);
            bool rises = score > before;
            ms_s[c][lane] = rises ? libm_expf(__fsub_rn(before, score)) : 1.0f;
            vs_s[c][lane] = rises ? 1.0f : libm_expf(__fsub_rn(score, before));
            float m_new = fmaxf(m, __shfl_sync(FULL_MASK, incl, WARP_SIZE - 1));
            __syncwarp();
            if (lane == 0) {
                float sum = s_s[c];
                for (int tt = 0; tt < nb; tt++) sum = __fmaf_rn(sum, ms_s[c][tt], vs_s[c][tt]);
                s_s[c] = sum;
                m_s[c] = m_new;
            }
        }
        __syncthreads();
        for (int tt = 0; tt < nb; tt++) {
            float ms = ms_s[c][tt], vs = vs_s[c][tt];
#pragma unroll
            for (int e = 0; e < DT; e++) {
                int d = t + GT * e;
                if (d >= a.dv) continue;
                float x = ms != 1.0f ? h2f(f2h(__fmul_rn(acc[e], ms))) : acc[e];
                acc[e] = h2f(f2h(__fmaf_rn(h2f(v_s[c][tt][d]), vs, x)));
            }
        }
    }

    float* o = a.out + (size_t)r * a.n_head * a.dv + (size_t)h * a.dv;
    if (!split) {
        if (c == 0) {
            float s = s_s[0];
            float inv = s == 0.0f ? 0.0f : __fdiv_rn(1.0f, s);
#pragma unroll
            for (int e = 0; e < DT; e++) {
                int d = t + GT * e;
                if (d < a.dv) o[d] = __fmul_rn(acc[e], inv);
            }
        }
        return;
    }
#pragma unroll
    for (int e = 0; e < DT; e++) part_acc[c][t + GT * e] = acc[e];
    __syncthreads();
    if (c != 0) return;
    float mm = NEG_INF, ss = 0.0f, res[DT];
#pragma unroll
    for (int e = 0; e < DT; e++) res[e] = 0.0f;
    for (int cc = 0; cc < 2; cc++) {
        float sc = s_s[cc], mc = m_s[cc];
        if (sc == 0.0f) continue;
        float m_new = fmaxf(mm, mc);
        float old = libm_expf(__fsub_rn(mm, m_new)), now = libm_expf(__fsub_rn(mc, m_new));
#pragma unroll
        for (int e = 0; e < DT; e++) res[e] = __fmaf_rn(res[e], old, __fmul_rn(part_acc[cc][t + GT * e], now));
        ss = __fmaf_rn(ss, old, __fmul_rn(sc, now));
        mm = m_new;
    }
    float inv = ss != 0.0f ? __fdiv_rn(1.0f, ss) : 1.0f;
#pragma unroll
    for (int e = 0; e < DT; e++) {
        int d = t + GT * e;
        if (d < a.dv) o[d] = __fmul_rn(res[e], inv);
    }
}

#define ATTN_PARAMS                                                                                  \
    const float *q, const u16 *kc, const u16 *vc, float *out, const u32 *positions, const u32 *slot_base, \
        const u32 *slots, int row0, int n_rows, int n_head, int n_head_kv, int dk, int dv, float kq_scale,  \
        int window, int n_slots
#define ATTN_ARGS \
    {q, kc, vc, out, positions, slot_base, slots, row0, n_rows, n_head, n_head_kv, dk, dv, kq_scale, window, n_slots}

#define ATTENTION(D, RW)                                                                                   \
    extern "C" __global__ void __launch_bounds__(ATTN_WARPS * WARP_SIZE) attention_tiled_##D(ATTN_PARAMS) { \
        follow_predecessor();                                                                              \
        attention_tiled<D, RW>(AttnArgs ATTN_ARGS);                                                        \
    }                                                                                                      \
    extern "C" __global__ void __launch_bounds__(8 * WARP_SIZE) attention_f16_##D(ATTN_PARAMS) {           \
        follow_predecessor();                                                                              \
        attention_f16<D>(AttnArgs ATTN_ARGS);                                                              \
    }

ATTENTION(128, 4)
ATTENTION(256, 2)
