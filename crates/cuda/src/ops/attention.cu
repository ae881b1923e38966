// Attention over the f16 KV cache. Each batch row belongs to a sequence
// whose positions map to cache slots through `slots` (from the row's
// `slot_base`); row r attends to its sequence's positions up to its own
// (and, with a window, those less than `window` behind it).

#define ATTN_WARPS 4
#define ATTN_MAX_DIM 256

__device__ __forceinline__ u32 slot_of(const u32* slots, const u32* slot_base, int r, u32 pos) {
    return slots[slot_base[r] + pos];
}

// Writes row r's K and V into its slot. One block per row.
extern "C" __global__ void kv_store(const float* k, const float* v, u16* kc, u16* vc, const u32* positions,
                                    const u32* slot_base, const u32* slots, int k_dim, int v_dim) {
    int r = blockIdx.x;
    u64 s = slot_of(slots, slot_base, r, positions[r]);
    for (int j = threadIdx.x; j < k_dim; j += blockDim.x) kc[s * k_dim + j] = f2h(k[(size_t)r * k_dim + j]);
    for (int j = threadIdx.x; j < v_dim; j += blockDim.x) vc[s * v_dim + j] = f2h(v[(size_t)r * v_dim + j]);
}

// One block per (row, head); each warp walks every ATTN_WARPS-th key with
// an online softmax, lane l holding dimensions l, l + 32, ...; the warps'
// partial results are merged at the end.
extern "C" __global__ void __launch_bounds__(ATTN_WARPS * WARP_SIZE)
    attention(const float* q, const u16* kc, const u16* vc, float* out, const u32* positions, const u32* slot_base,
              const u32* slots, int n_head, int n_head_kv, int dk, int dv, float kq_scale, int window) {
    __shared__ float w_max[ATTN_WARPS], w_sum[ATTN_WARPS];
    __shared__ float w_acc[ATTN_WARPS][ATTN_MAX_DIM];
    int r = blockIdx.x, h = blockIdx.y;
    int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
    int kh = h / (n_head / n_head_kv);
    int k_dim = n_head_kv * dk, v_dim = n_head_kv * dv;
    u32 pos = positions[r];
    u32 first = (window > 0 && pos + 1 > (u32)window) ? pos + 1 - (u32)window : 0;

    const float* qr = q + (size_t)r * n_head * dk + (size_t)h * dk;
    float qv[ATTN_MAX_DIM / WARP_SIZE], acc[ATTN_MAX_DIM / WARP_SIZE];
#pragma unroll
    for (int i = 0; i < ATTN_MAX_DIM / WARP_SIZE; i++) {
        int d = lane + WARP_SIZE * i;
        qv[i] = d < dk ? qr[d] * kq_scale : 0.0f;
        acc[i] = 0.0f;
    }
    float m = NEG_INF, l = 0.0f;
    for (u32 j = first + warp; j <= pos; j += ATTN_WARPS) {
        u64 s = slot_of(slots, slot_base, r, j);
        const u16* kr = kc + s * k_dim + (size_t)kh * dk;
        const u16* vr = vc + s * v_dim + (size_t)kh * dv;
        float dot = 0.0f;
#pragma unroll
        for (int i = 0; i < ATTN_MAX_DIM / WARP_SIZE; i++) {
            int d = lane + WARP_SIZE * i;
            if (d < dk) dot += qv[i] * h2f(kr[d]);
        }
        dot = warp_sum(dot);
        float m_new = fmaxf(m, dot);
        float corr = expf(m - m_new), p = expf(dot - m_new);
        l = l * corr + p;
#pragma unroll
        for (int i = 0; i < ATTN_MAX_DIM / WARP_SIZE; i++) {
            int d = lane + WARP_SIZE * i;
            acc[i] = acc[i] * corr + (d < dv ? p * h2f(vr[d]) : 0.0f);
        }
        m = m_new;
    }
    if (lane == 0) {
        w_max[warp] = m;
        w_sum[warp] = l;
    }
#pragma unroll
    for (int i = 0; i < ATTN_MAX_DIM / WARP_SIZE; i++) {
        int d = lane + WARP_SIZE * i;
        if (d < dv) w_acc[warp][d] = acc[i];
    }
    __syncthreads();
    float mx = NEG_INF;
    for (int w = 0; w < ATTN_WARPS; w++) mx = fmaxf(mx, w_max[w]);
    float* o = out + (size_t)r * n_head * dv + (size_t)h * dv;
    for (int d = threadIdx.x; d < dv; d += blockDim.x) {
        float num = 0.0f, den = 0.0f;
        for (int w = 0; w < ATTN_WARPS; w++) {
            if (w_sum[w] == 0.0f) continue;
            float f = expf(w_max[w] - mx);
            num += f * w_acc[w][d];
            den += f * w_sum[w];
        }
        o[d] = num / den;
    }
}
