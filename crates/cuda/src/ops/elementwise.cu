// Norms, rotary embedding, gated activations and the small row operations
// of the forward pass. Elementwise kernels take one thread per element.

#define ELEMENTWISE_BLOCK 256

// Each block normalises one run of `group` values (a row, or one head for
// Q/K norms) and multiplies by w, after adding the residual y to x when y
// is given (x keeps the sum). The sum of squares is taken in f64, as
// ggml's CPU norm does. With a quantization mode, the runs are whole rows
// about to meet a matmul, and are quantized for it too (xq, xd as the
// quantize kernel writes them).
extern "C" __global__ void rms_norm(float* x, const float* y, const float* w, float* out, int group, float eps,
                                    i8* xq, float2* xd, int mode) {
    follow_predecessor();
    __shared__ double partial[32];
    float* xr = x + (size_t)blockIdx.x * group;
    float* o = out + (size_t)blockIdx.x * group;
    double ss = 0.0;
    for (int j = threadIdx.x; j < group; j += blockDim.x) {
        float v = xr[j];
        if (y) {
            v += y[(size_t)blockIdx.x * group + j];
            xr[j] = v;
        }
        ss += (double)(v * v);
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) ss += __shfl_xor_sync(FULL_MASK, ss, off);
    int lane = threadIdx.x % WARP_SIZE, warp = threadIdx.x / WARP_SIZE, warps = blockDim.x / WARP_SIZE;
    if (lane == 0) partial[warp] = ss;
    __syncthreads();
    ss = 0.0;
    for (int i = 0; i < warps; i++) ss += partial[i];
    float mean = (float)(ss / (double)group);
    float scale = 1.0f / sqrtf(mean + eps);
    if (mode == QUANT_NONE) {
        for (int j = threadIdx.x; j < group; j += blockDim.x) o[j] = xr[j] * scale * w[j];
        return;
    }
    size_t q0 = (size_t)blockIdx.x * group;
    int blocks = group / quant_block_len(mode);
    for (int b = warp; b < blocks; b += warps) {
        emit_block(mode, b, o, xq + q0, xd + q0 / 32, [&](int j) { return xr[j] * scale * w[j]; });
    }
}

extern "C" __global__ void scale_f32(float* x, float s, u64 n) {
    follow_predecessor();
    u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] *= s;
}

extern "C" __global__ void add_f32(float* x, const float* y, u64 n) {
    follow_predecessor();
    u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] += y[i];
}

extern "C" __global__ void softcap_f32(float* x, float c, u64 n) {
    follow_predecessor();
    u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = c * tanhf(x[i] / c);
}

extern "C" __global__ void add_bias(float* x, const float* b, int cols, u64 n) {
    follow_predecessor();
    u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] += b[i % cols];
}

// dst[r][j] = src[r][start + j]; n = rows * cols of dst.
extern "C" __global__ void copy_cols(const float* src, int src_cols, int start, float* dst, int cols, u64 n) {
    follow_predecessor();
    u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    u64 r = i / cols;
    dst[i] = src[r * src_cols + start + i % cols];
}

extern "C" __global__ void gather_rows(const float* x, const u32* rows, float* out, int cols, u64 n) {
    follow_predecessor();
    u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    out[i] = x[(u64)rows[i / cols] * cols + i % cols];
}

// SiLU as the CPU backend's swiglu: ggml's vector expf for the groups of 8
// of a row, libm's for its tail.
__device__ __forceinline__ float silu(float x, bool vector) {
    float e = vector ? ggml_expf(__fsub_rn(0.0f, x)) : libm_expf(-x);
    return __fdiv_rn(x, __fadd_rn(1.0f, e));
}

// GELU (tanh form) as ggml's CPU table gives it: of the input rounded to
// f16, rounded to f16; the identity from 10 up, 0 from -10 down.
__device__ __forceinline__ float gelu(float x) {
    if (x <= -10.0f) return 0.0f;
    if (x >= 10.0f) return x;
    const float sqrt_2_over_pi = 0.79788458347320556641f, coef_a = 0.044715f;
    float h = h2f(f2h(x));
    float inner = __fmul_rn(__fmul_rn(sqrt_2_over_pi, h), __fadd_rn(1.0f, __fmul_rn(__fmul_rn(coef_a, h), h)));
    float t = (float)tanh((double)inner);
    return h2f(f2h(__fmul_rn(__fmul_rn(0.5f, h), __fadd_rn(1.0f, t))));
}

// out = act(gate) * up with row strides of their own (a fused [gate | up]
// row has both halves in one tensor). act: 0 SiLU, 1 GELU (tanh). With a
// quantization mode, one warp per block of it (n blocks over all rows),
// which also quantizes the result for the next matmul; else one thread per
// value (n values).
extern "C" __global__ void glu(const float* gate, const float* up, int stride, float* out, int cols, int act, u64 n,
                               i8* xq, float2* xd, int mode) {
    follow_predecessor();
    u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    u64 unit = mode == QUANT_NONE ? i : i / WARP_SIZE;
    if (unit >= n) return;
    u64 first = mode == QUANT_NONE ? i : unit * quant_block_len(mode);
    u64 r = first / cols;
    const float* g = gate + r * stride;
    const float* u = up + r * stride;
    int vector_end = cols & ~7;
    auto value = [&](int j) {
        float a = act == 0 ? silu(g[j], j < vector_end) : gelu(g[j]);
        return __fmul_rn(a, u[j]);
    };
    if (mode == QUANT_NONE) {
        int j = (int)(first % cols);
        out[first] = value(j);
        return;
    }
    int b = (int)(first % cols) / quant_block_len(mode);
    emit_block(mode, b, out + r * cols, xq + r * cols, xd + r * cols / 32, value);
}

// Rotates pairs of each head of rows of q, and of k when given, by angle
// pos * theta_scale^i (times freq_scale, divided by per-frequency factors
// where given), the power taken by repeated f32 multiplication as ggml
// does, so that angles match the CPU's. neox: pairs (i, i + n_rot/2), else
// (2i, 2i + 1). One block per (row, head), q's heads then k's; with v,
// one more block per row, and each row's rotated K and its V are written
// into its cache slot as f16 (as kv_store writes them).
extern "C" __global__ void rope(float* q, int q_cols, int q_heads, float* k, int k_cols, int k_heads, const float* v,
                                int v_cols, u16* kc, u16* vc, const u32* positions, const u32* slot_base,
                                const u32* slots, int head_dim, int n_rot, float theta_scale, float freq_scale,
                                const float* factors, int neox) {
    follow_predecessor();
    int r = blockIdx.x, h = blockIdx.y;
    u64 slot = v ? slots[slot_base[r] + positions[r]] : 0;
    if (h == q_heads + k_heads) {
        for (int j = threadIdx.x; j < v_cols; j += blockDim.x)
            vc[slot * v_cols + j] = f2h(v[(size_t)r * v_cols + j]);
        return;
    }
    bool is_k = h >= q_heads;
    float* head = is_k ? k + (size_t)r * k_cols + (size_t)(h - q_heads) * head_dim
                       : q + (size_t)r * q_cols + (size_t)h * head_dim;
    int half = n_rot / 2;
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        float theta = (float)positions[r];
        for (int j = 0; j < i; j++) theta *= theta_scale;
        float ff = factors ? factors[i] : 1.0f;
        float angle = freq_scale * (theta / ff);
        float c = cosf(angle), s = sinf(angle);
        int a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
        float x0 = head[a], x1 = head[b];
        head[a] = fmaf(x0, c, -(x1 * s));
        head[b] = fmaf(x0, s, x1 * c);
    }
    if (!v || !is_k) return;
    __syncthreads();
    u16* dst = kc + slot * k_cols + (size_t)(h - q_heads) * head_dim;
    for (int j = threadIdx.x; j < head_dim; j += blockDim.x) dst[j] = f2h(head[j]);
}

// Index of each row's largest value, the first on ties, as the CPU's
// argmax: NaN is never taken, except that a NaN first value wins (nothing
// compares greater than it). One block per row.
extern "C" __global__ void argmax_rows(const float* x, int cols, u32* out) {
    follow_predecessor();
    __shared__ float best_v[32];
    __shared__ int best_i[32];
    const float* xr = x + (size_t)blockIdx.x * cols;
    float bv = NEG_INF;
    int bi = cols;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) {
        float v = xr[j];
        if (v > bv || (v == bv && j < bi)) bv = v, bi = j;
    }
    int lane = threadIdx.x % WARP_SIZE, warp = threadIdx.x / WARP_SIZE;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        float v2 = __shfl_xor_sync(FULL_MASK, bv, o);
        int i2 = __shfl_xor_sync(FULL_MASK, bi, o);
        if (v2 > bv || (v2 == bv && i2 < bi)) bv = v2, bi = i2;
    }
    if (lane == 0) best_v[warp] = bv, best_i[warp] = bi;
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 1; w < (int)blockDim.x / WARP_SIZE; w++) {
            if (best_v[w] > bv || (best_v[w] == bv && best_i[w] < bi)) bv = best_v[w], bi = best_i[w];
        }
        out[blockIdx.x] = (xr[0] != xr[0] || bi == cols) ? 0 : (u32)bi;
    }
}
