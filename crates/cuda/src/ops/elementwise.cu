// Norms, rotary embedding, gated activations and the small row operations
// of the forward pass. Elementwise kernels take one thread per element.

#define ELEMENTWISE_BLOCK 256

// Each block normalises one run of `group` values (a row, or one head for
// Q/K norms) and multiplies by w. The sum of squares is taken in f64, as
// ggml's CPU norm does.
extern "C" __global__ void rms_norm(const float* x, const float* w, float* out, int group, float eps) {
    __shared__ double partial[32];
    const float* xr = x + (size_t)blockIdx.x * group;
    float* o = out + (size_t)blockIdx.x * group;
    double ss = 0.0;
    for (int j = threadIdx.x; j < group; j += blockDim.x) ss += (double)(xr[j] * xr[j]);
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) ss += __shfl_xor_sync(FULL_MASK, ss, off);
    int lane = threadIdx.x % WARP_SIZE, warp = threadIdx.x / WARP_SIZE;
    if (lane == 0) partial[warp] = ss;
    __syncthreads();
    ss = 0.0;
    for (int i = 0; i < (int)(blockDim.x + WARP_SIZE - 1) / WARP_SIZE; i++) ss += partial[i];
    float mean = (float)(ss / (double)group);
    float scale = 1.0f / sqrtf(mean + eps);
    for (int j = threadIdx.x; j < group; j += blockDim.x) o[j] = xr[j] * scale * w[j];
}

extern "C" __global__ void scale_f32(float* x, float s, u64 n) {
    u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] *= s;
}

extern "C" __global__ void add_f32(float* x, const float* y, u64 n) {
    u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] += y[i];
}

extern "C" __global__ void softcap_f32(float* x, float c, u64 n) {
    u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = c * tanhf(x[i] / c);
}

extern "C" __global__ void add_bias(float* x, const float* b, int cols, u64 n) {
    u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] += b[i % cols];
}

// dst[r][j] = src[r][start + j]; n = rows * cols of dst.
extern "C" __global__ void copy_cols(const float* src, int src_cols, int start, float* dst, int cols, u64 n) {
    u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    u64 r = i / cols;
    dst[i] = src[r * src_cols + start + i % cols];
}

extern "C" __global__ void gather_rows(const float* x, const u32* rows, float* out, int cols, u64 n) {
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
// row has both halves in one tensor). act: 0 SiLU, 1 GELU (tanh).
extern "C" __global__ void glu(const float* gate, const float* up, int stride, float* out, int cols, int act, u64 n) {
    u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    u64 r = i / cols, j = i % cols;
    float g = gate[r * stride + j], u = up[r * stride + j];
    float a = act == 0 ? silu(g, j < (u64)(cols & ~7)) : gelu(g);
    out[i] = __fmul_rn(a, u);
}

// Rotates pairs of each head of row r by angle pos * theta_scale^i
// (times freq_scale, divided by per-frequency factors where given), the
// power taken by repeated f32 multiplication as ggml does, so that angles
// match the CPU's. neox: pairs (i, i + n_rot/2), else (2i, 2i + 1). One
// block per (row, head).
extern "C" __global__ void rope(float* x, int cols, const u32* positions, int n_heads, int head_dim, int n_rot,
                                float theta_scale, float freq_scale, const float* factors, int neox) {
    int r = blockIdx.x, h = blockIdx.y;
    int half = n_rot / 2;
    float* row = x + (size_t)r * cols;
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        float theta = (float)positions[r];
        for (int j = 0; j < i; j++) theta *= theta_scale;
        float ff = factors ? factors[i] : 1.0f;
        float angle = freq_scale * (theta / ff);
        float c = cosf(angle), s = sinf(angle);
        float* head = row + (size_t)h * head_dim;
        int a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
        float x0 = head[a], x1 = head[b];
        head[a] = fmaf(x0, c, -(x1 * s));
        head[b] = fmaf(x0, s, x1 * c);
    }
}
