// forja's CUDA kernels, compiled at run time by NVRTC for the GPU present. Activations are f32;
// the KV cache holds f16 bit patterns (converted with PTX `cvt`, so no header is needed).
// Every kernel has a CPU reference in reference.rs.

__device__ __forceinline__ float h2f(unsigned short h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

__device__ __forceinline__ unsigned short f2h(float f) {
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

// Sum (or max) over the block; every thread gets the result. blockDim.x is a multiple of 32.
__device__ float block_reduce(float v, bool is_max) {
    __shared__ float part[32];
    for (int o = 16; o > 0; o >>= 1) {
        float other = __shfl_xor_sync(0xffffffffu, v, o);
        v = is_max ? fmaxf(v, other) : v + other;
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) part[warp] = v;
    __syncthreads();
    const int warps = blockDim.x >> 5;
    if (warp == 0) {
        v = lane < warps ? part[lane] : (is_max ? __int_as_float(0xff800000) : 0.0f);
        for (int o = 16; o > 0; o >>= 1) {
            float other = __shfl_xor_sync(0xffffffffu, v, o);
            v = is_max ? fmaxf(v, other) : v + other;
        }
        if (lane == 0) part[0] = v;
    }
    __syncthreads();
    const float r = part[0];
    __syncthreads();
    return r;
}

// One block per row: out = x / sqrt(mean(x^2) + eps) * (offset + w).
extern "C" __global__ void rms_norm_f32(float* out, const float* x, const float* w, int cols,
                                        float eps, float offset) {
    const float* xr = x + (size_t)blockIdx.x * cols;
    float* o = out + (size_t)blockIdx.x * cols;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) ss += xr[i] * xr[i];
    ss = block_reduce(ss, false);
    const float inv = rsqrtf(ss / cols + eps);
    for (int i = threadIdx.x; i < cols; i += blockDim.x) o[i] = xr[i] * inv * (offset + w[i]);
}

// out = silu(gate) * up.
extern "C" __global__ void silu_mul_f32(float* out, const float* gate, const float* up, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        const float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

// One block per (row, head): rotates the first 2*half dims of the head in the neox layout.
extern "C" __global__ void rope_neox_f32(float* x, const unsigned* positions, int heads,
                                         int head_dim, int half, const float* inv_freq) {
    const int row = blockIdx.x / heads, head = blockIdx.x % heads;
    float* h = x + ((size_t)row * heads + head) * head_dim;
    const double p = (double)positions[row];
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        double s, c;
        sincos(p * (double)inv_freq[i], &s, &c);
        const float cf = (float)c, sf = (float)s;
        const float a = h[i], b = h[i + half];
        h[i] = a * cf - b * sf;
        h[i + half] = b * cf + a * sf;
    }
}

// One block per token: its keys and values (f32, `width` each) into its slot of the caches.
extern "C" __global__ void reshape_and_cache_f16(const float* k, const float* v,
                                                 unsigned short* k_cache, unsigned short* v_cache,
                                                 const unsigned* slots, int width) {
    const size_t src = (size_t)blockIdx.x * width;
    const size_t dst = (size_t)slots[blockIdx.x] * width;
    for (int i = threadIdx.x; i < width; i += blockDim.x) {
        k_cache[dst + i] = f2h(k[src + i]);
        v_cache[dst + i] = f2h(v[src + i]);
    }
}

// Decode attention over the paged cache, one block per (head, sequence): scores of every
// visible key into shared memory, softmax, then each thread sums the values of its dims.
extern "C" __global__ void paged_attention_decode_f16(
    float* out, const float* q, const unsigned short* k_cache, const unsigned short* v_cache,
    const unsigned* block_tables, const unsigned* context_lens, int max_blocks, int block_size,
    int heads, int kv_heads, int head_dim, float scale) {
    extern __shared__ float shared[];
    const int h = blockIdx.x, s = blockIdx.y;
    const int ctx = (int)context_lens[s];
    const int g = h / (heads / kv_heads);
    const size_t width = (size_t)kv_heads * head_dim;
    const unsigned* table = block_tables + (size_t)s * max_blocks;
    float* qs = shared;
    float* scores = shared + head_dim;
    const float* qh = q + ((size_t)s * heads + h) * head_dim;
    for (int i = threadIdx.x; i < head_dim; i += blockDim.x) qs[i] = qh[i];
    __syncthreads();
    float m = __int_as_float(0xff800000);
    for (int j = threadIdx.x; j < ctx; j += blockDim.x) {
        const size_t slot = (size_t)table[j / block_size] * block_size + j % block_size;
        const unsigned short* kr = k_cache + slot * width + (size_t)g * head_dim;
        float d = 0.0f;
        for (int i = 0; i < head_dim; i++) d += qs[i] * h2f(kr[i]);
        d *= scale;
        scores[j] = d;
        m = fmaxf(m, d);
    }
    m = block_reduce(m, true);
    float sum = 0.0f;
    for (int j = threadIdx.x; j < ctx; j += blockDim.x) {
        const float e = expf(scores[j] - m);
        scores[j] = e;
        sum += e;
    }
    sum = block_reduce(sum, false);
    float* o = out + ((size_t)s * heads + h) * head_dim;
    for (int i = threadIdx.x; i < head_dim; i += blockDim.x) {
        float acc = 0.0f;
        for (int j = 0; j < ctx; j++) {
            const size_t slot = (size_t)table[j / block_size] * block_size + j % block_size;
            acc += scores[j] * h2f(v_cache[slot * width + (size_t)g * head_dim + i]);
        }
        o[i] = acc / sum;
    }
}
