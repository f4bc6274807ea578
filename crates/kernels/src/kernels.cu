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

// Attention over the paged cache, one block per (head, query row): row r belongs to sequence
// row_seqs[r] (its row of block_tables) and sees that sequence's first context_lens[r] positions
// (its own position + 1: decode rows see everything, prefill rows are causal), the last `window`
// of them when window > 0. softcap > 0 caps scores as cap·tanh(s / cap). Each warp takes every
// ATT_WARPS-th position: its lanes split the head's dims (coalesced loads), a shuffle sums the dot
// product; scores wait in shared memory for the softmax, then each warp sums its positions'
// values over its lanes' dims and the warps' partial sums are added. head_dim ≤ 256.
#define ATT_WARPS 8
extern "C" __global__ void paged_attention_f16(
    float* out, const float* q, const unsigned short* k_cache, const unsigned short* v_cache,
    const unsigned* block_tables, const unsigned* row_seqs, const unsigned* context_lens,
    int max_blocks, int block_size, int heads, int kv_heads, int head_dim, float scale,
    int window, float softcap) {
    extern __shared__ float shared[];
    const int h = blockIdx.x, r = blockIdx.y;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int ctx = (int)context_lens[r];
    const int first = window > 0 && ctx > window ? ctx - window : 0;
    const int n = ctx - first;
    const int g = h / (heads / kv_heads);
    const size_t width = (size_t)kv_heads * head_dim;
    const unsigned* table = block_tables + (size_t)row_seqs[r] * max_blocks;
    float* qs = shared;                          // [head_dim]
    float* partial = shared + head_dim;          // [ATT_WARPS][head_dim]
    float* scores = partial + ATT_WARPS * head_dim;  // [n]
    const float* qh = q + ((size_t)r * heads + h) * head_dim;
    for (int i = threadIdx.x; i < head_dim; i += blockDim.x) qs[i] = qh[i];
    __syncthreads();
    float m = __int_as_float(0xff800000);
    for (int t = warp; t < n; t += ATT_WARPS) {
        const int j = first + t;
        const size_t slot = (size_t)table[j / block_size] * block_size + j % block_size;
        const unsigned short* kr = k_cache + slot * width + (size_t)g * head_dim;
        float d = 0.0f;
        for (int i = lane; i < head_dim; i += 32) d += qs[i] * h2f(kr[i]);
        for (int o = 16; o > 0; o >>= 1) d += __shfl_xor_sync(0xffffffffu, d, o);
        d *= scale;
        if (softcap > 0.0f) d = softcap * tanhf(d / softcap);
        if (lane == 0) scores[t] = d;
        m = fmaxf(m, d);
    }
    m = block_reduce(m, true);
    float sum = 0.0f;
    for (int t = threadIdx.x; t < n; t += blockDim.x) {
        const float e = expf(scores[t] - m);
        scores[t] = e;
        sum += e;
    }
    sum = block_reduce(sum, false);
    float acc[8];
    for (int c = 0; c < 8; c++) acc[c] = 0.0f;
    for (int t = warp; t < n; t += ATT_WARPS) {
        const int j = first + t;
        const size_t slot = (size_t)table[j / block_size] * block_size + j % block_size;
        const unsigned short* vr = v_cache + slot * width + (size_t)g * head_dim;
        const float p = scores[t];
        for (int c = 0; c < 8; c++) {
            const int i = lane + 32 * c;
            if (i < head_dim) acc[c] += p * h2f(vr[i]);
        }
    }
    for (int c = 0; c < 8; c++) {
        const int i = lane + 32 * c;
        if (i < head_dim) partial[warp * head_dim + i] = acc[c];
    }
    __syncthreads();
    float* o = out + ((size_t)r * heads + h) * head_dim;
    for (int i = threadIdx.x; i < head_dim; i += blockDim.x) {
        float v = 0.0f;
        for (int w = 0; w < ATT_WARPS; w++) v += partial[w * head_dim + i];
        o[i] = v / sum;
    }
}

// ---- The decoder's step (runner.rs) -------------------------------------------------------
// Matrix products run in cuBLAS; these kernels do everything between them. Inputs of a matrix
// product are f32 or f16 (`half_out`), as the weights are.

__device__ __forceinline__ void store(void* out, size_t i, float v, int half_out) {
    if (half_out) ((unsigned short*)out)[i] = f2h(v);
    else ((float*)out)[i] = v;
}

// One block per token: row ids[r] of the f32 embedding table, times scale.
extern "C" __global__ void embed_rows(float* out, const float* table, const unsigned* ids,
                                     int cols, float scale) {
    const float* src = table + (size_t)ids[blockIdx.x] * cols;
    float* o = out + (size_t)blockIdx.x * cols;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) o[i] = src[i] * scale;
}

// One block per row: row rows[r] of x (or row r when rows is null), RMS-normalized with
// weight w (the effective scale: Gemma's 1 + w already added), to out as f32 or f16.
extern "C" __global__ void rms_norm_rows(void* out, const float* x, const unsigned* rows,
                                         const float* w, int cols, float eps, int half_out) {
    const size_t src = (size_t)(rows ? rows[blockIdx.x] : blockIdx.x) * cols;
    const float* xr = x + src;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) ss += xr[i] * xr[i];
    ss = block_reduce(ss, false);
    const float inv = rsqrtf(ss / cols + eps);
    const size_t dst = (size_t)blockIdx.x * cols;
    for (int i = threadIdx.x; i < cols; i += blockDim.x)
        store(out, dst + i, xr[i] * inv * w[i], half_out);
}

// x += RMSNorm(y) · w, row by row (Gemma 2/3's norm of a block's output before the residual).
extern "C" __global__ void add_rms_norm(float* x, const float* y, const float* w, int cols,
                                        float eps) {
    const float* yr = y + (size_t)blockIdx.x * cols;
    float* xr = x + (size_t)blockIdx.x * cols;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) ss += yr[i] * yr[i];
    ss = block_reduce(ss, false);
    const float inv = rsqrtf(ss / cols + eps);
    for (int i = threadIdx.x; i < cols; i += blockDim.x) xr[i] += yr[i] * inv * w[i];
}

// One block per (row, head) of a fused q/k/v projection ([rows, (heads + 2·kv_heads)·dim]):
// plus bias (when given), per-head RMSNorm of q and k heads (when q_norm / k_norm are given),
// RoPE of q and k heads over the first 2·half dims from the cos/sin tables ([positions, half])
// at the row's position (neox halves, or adjacent pairs when interleaved); q heads go to q
// ([rows, heads·dim], f32), k and v heads to the row's slot of the f16 caches.
extern "C" __global__ void qkv_rope_cache(
    const float* qkv, const float* bias, const float* q_norm, const float* k_norm, float eps,
    const float* cos_t, const float* sin_t, int half, int interleaved,
    const unsigned* positions, const unsigned* slots, float* q, unsigned short* k_cache,
    unsigned short* v_cache, int heads, int kv_heads, int dim) {
    extern __shared__ float sh[];
    const int row = blockIdx.x, hh = blockIdx.y;
    const int total = heads + 2 * kv_heads;
    const float* src = qkv + ((size_t)row * total + hh) * dim;
    const float* b = bias ? bias + (size_t)hh * dim : 0;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) sh[i] = src[i] + (b ? b[i] : 0.0f);
    __syncthreads();
    const bool is_q = hh < heads, is_k = !is_q && hh < heads + kv_heads;
    const float* nw = is_q ? q_norm : (is_k ? k_norm : 0);
    if (nw) {
        float ss = 0.0f;
        for (int i = threadIdx.x; i < dim; i += blockDim.x) ss += sh[i] * sh[i];
        ss = block_reduce(ss, false);
        const float inv = rsqrtf(ss / dim + eps);
        for (int i = threadIdx.x; i < dim; i += blockDim.x) sh[i] = sh[i] * inv * nw[i];
        __syncthreads();
    }
    if (is_q || is_k) {
        const float* c = cos_t + (size_t)positions[row] * half;
        const float* s = sin_t + (size_t)positions[row] * half;
        for (int i = threadIdx.x; i < half; i += blockDim.x) {
            const int a = interleaved ? 2 * i : i, bb = interleaved ? 2 * i + 1 : i + half;
            const float x1 = sh[a], x2 = sh[bb];
            sh[a] = x1 * c[i] - x2 * s[i];
            sh[bb] = x2 * c[i] + x1 * s[i];
        }
        __syncthreads();
    }
    if (is_q) {
        float* dst = q + ((size_t)row * heads + hh) * dim;
        for (int i = threadIdx.x; i < dim; i += blockDim.x) dst[i] = sh[i];
    } else {
        const int g = is_k ? hh - heads : hh - heads - kv_heads;
        unsigned short* cache = is_k ? k_cache : v_cache;
        const size_t dst = ((size_t)slots[row] * kv_heads + g) * dim;
        for (int i = threadIdx.x; i < dim; i += blockDim.x) cache[dst + i] = f2h(sh[i]);
    }
}

// act(gate) · up from a fused gate/up product ([rows, 2·ff], gate first) into [rows, ff].
// act: 0 SiLU, 1 GELU (tanh), 2 GELU (erf), 3 ReLU.
extern "C" __global__ void gated_act(void* out, const float* gate_up, int rows, int ff, int act,
                                     int half_out) {
    const size_t n = (size_t)rows * ff;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        const size_t r = i / ff, c = i % ff;
        const float g = gate_up[r * 2 * ff + c], u = gate_up[r * 2 * ff + ff + c];
        float a;
        if (act == 0) a = g / (1.0f + expf(-g));
        else if (act == 1) a = 0.5f * g * (1.0f + tanhf(0.7978845608f * (g + 0.044715f * g * g * g)));
        else if (act == 2) a = 0.5f * g * (1.0f + erff(g * 0.7071067812f));
        else a = fmaxf(g, 0.0f);
        store(out, i, a * u, half_out);
    }
}

// f32 → f32 or f16 copy (the attention output into the output projection's input type).
extern "C" __global__ void convert(void* out, const float* x, int n, int half_out) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        store(out, i, x[i], half_out);
}

// Final logit soft-capping in place: cap · tanh(x / cap).
extern "C" __global__ void softcap_f32(float* x, int n, float cap) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        x[i] = cap * tanhf(x[i] / cap);
}

// The largest value of each row of x and its index (the first on ties) packed in one u64 key
// (value order in the high half, inverted index in the low half), combined across blocks with
// atomicMax: grid (chunks, rows), 256 threads; keys must start at 0.
__device__ __forceinline__ unsigned long long argmax_key(float v, int i) {
    unsigned bits = __float_as_uint(v);
    bits = (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
    return ((unsigned long long)bits << 32) | (0xffffffffu - (unsigned)i);
}
extern "C" __global__ void argmax_rows(unsigned long long* keys, const float* x, int cols) {
    __shared__ unsigned long long best[256];
    const float* r = x + (size_t)blockIdx.y * cols;
    const int chunk = (cols + gridDim.x - 1) / gridDim.x;
    const int begin = blockIdx.x * chunk, end = min(cols, begin + chunk);
    unsigned long long k = 0;
    for (int i = begin + threadIdx.x; i < end; i += blockDim.x) {
        const unsigned long long c = argmax_key(r[i], i);
        if (c > k) k = c;
    }
    best[threadIdx.x] = k;
    __syncthreads();
    for (int o = blockDim.x / 2; o > 0; o >>= 1) {
        if (threadIdx.x < o && best[threadIdx.x + o] > best[threadIdx.x])
            best[threadIdx.x] = best[threadIdx.x + o];
        __syncthreads();
    }
    if (threadIdx.x == 0) atomicMax(keys + blockIdx.y, best[0]);
}

extern "C" __global__ void zero_u64(unsigned long long* x, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) x[i] = 0;
}

// ---- GGUF block-quantized weights, read as stored -----------------------------------------
// A row is read in groups of 8 consecutive values; decode8 writes group k of a row. Types (as
// forja_kernels::cuda::QuantKind numbers them): 0 Q8_0, 1 Q4_0, 2 Q4_1, 3 Q4_K, 4 Q6_K. Q4_K
// groups load their 8 nibbles as one 8-byte word (144-byte blocks keep 8-byte alignment).

__device__ __forceinline__ float h2f_at(const unsigned char* p) {
    return h2f((unsigned short)(p[0] | (p[1] << 8)));
}

__device__ __forceinline__ void decode8(int ty, const unsigned char* row, int k, float* v) {
    if (ty == 3) {  // Q4_K: 256 values; d, dmin, 12 bytes of 6-bit scales/mins, 128 bytes
        const unsigned char* b = row + (size_t)(k / 32) * 144;
        const int t = k % 32, j = t / 4;  // sub-block of 32, and which 8 of it
        const float d = h2f_at(b), dmin = h2f_at(b + 2);
        const unsigned char* s = b + 4;
        int sc, m;
        if (j < 4) {
            sc = s[j] & 63;
            m = s[j + 4] & 63;
        } else {
            sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
            m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
        }
        const uint2 q = *(const uint2*)(b + 16 + (j / 2) * 32 + (t % 4) * 8);
        const int shift = 4 * (j & 1);
        const float d1 = d * (float)sc, m1 = dmin * (float)m;
        for (int l = 0; l < 4; l++) {
            v[l] = d1 * (float)((q.x >> (8 * l + shift)) & 0xF) - m1;
            v[l + 4] = d1 * (float)((q.y >> (8 * l + shift)) & 0xF) - m1;
        }
    } else if (ty == 4) {  // Q6_K: 256 values; ql[128], qh[64], i8 scales[16], f16 d
        const unsigned char* b = row + (size_t)(k / 32) * 210;
        const int t = k % 32, h = t / 16, g = (t % 16) / 4, l0 = (t % 4) * 8;
        const unsigned char* ql = b + h * 64 + (g & 1) * 32 + l0;
        const unsigned char* qh = b + 128 + h * 32 + l0;
        const signed char* sc = (const signed char*)(b + 192 + h * 8);
        const float ds = h2f_at(b + 208) * (float)sc[l0 / 16 + 2 * g];
        for (int l = 0; l < 8; l++) {
            const int lo = (g < 2) ? (ql[l] & 0xF) : (ql[l] >> 4);
            v[l] = ds * (float)((lo | (((qh[l] >> (2 * g)) & 3) << 4)) - 32);
        }
    } else if (ty == 0) {  // Q8_0: f16 d, 32 × i8
        const unsigned char* b = row + (size_t)(k / 4) * 34;
        const float d = h2f_at(b);
        const signed char* q = (const signed char*)(b + 2 + (k % 4) * 8);
        for (int l = 0; l < 8; l++) v[l] = d * (float)q[l];
    } else {  // Q4_0 / Q4_1: f16 d (, f16 m), 16 bytes: low nibbles 0..15, high 16..31
        const int bytes = ty == 1 ? 18 : 20;
        const unsigned char* b = row + (size_t)(k / 4) * bytes;
        const float d = h2f_at(b);
        const float m = ty == 1 ? -8.0f * d : h2f_at(b + 2);
        const unsigned char* q = b + (bytes - 16) + (k % 2) * 8;
        const int shift = (k % 4) < 2 ? 0 : 4;
        for (int l = 0; l < 8; l++) v[l] = d * (float)((q[l] >> shift) & 0xF) + m;
    }
}

// y[r, y_col + o] = Σ_k x[r, k] · w[o, k] (+ beta · y[r, y_col + o]) for activation rows
// row0..row0 + rows, rows ≤ 8 (f32, or f16 when x_half; y rows ldy apart): one warp per output
// row, each lane taking every 32nd group of 8 values (a warp reads 256 consecutive values at a
// time: one K-quant block, or 8 small blocks).
extern "C" __global__ void gemv_quant(float* y, const unsigned char* w, const void* x, int rows,
                                      int out, int in, int row_bytes, int ty, float beta,
                                      int x_half, int ldy, int y_col, int row0) {
    const int warp = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, lane = threadIdx.x & 31;
    if (warp >= out) return;
    const unsigned char* wr = w + (size_t)warp * row_bytes;
    float acc[8];
    for (int r = 0; r < 8; r++) acc[r] = 0.0f;
    float v[8];
    for (int k = lane; k < in / 8; k += 32) {
        decode8(ty, wr, k, v);
        for (int r = 0; r < rows; r++) {
            float s = 0.0f;
            if (x_half) {
                const uint4 xv = *(const uint4*)((const unsigned short*)x + (size_t)(row0 + r) * in + k * 8);
                const unsigned int words[4] = {xv.x, xv.y, xv.z, xv.w};
                for (int l = 0; l < 4; l++) {
                    s += v[2 * l] * h2f((unsigned short)(words[l] & 0xFFFF));
                    s += v[2 * l + 1] * h2f((unsigned short)(words[l] >> 16));
                }
            } else {
                const float* xr = (const float*)x + (size_t)(row0 + r) * in + k * 8;
                for (int l = 0; l < 8; l++) s += v[l] * xr[l];
            }
            acc[r] += s;
        }
    }
    for (int r = 0; r < rows; r++) {
        float s = acc[r];
        for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
        if (lane == 0) {
            float* dst = y + (size_t)(row0 + r) * ldy + y_col + warp;
            *dst = s + (beta != 0.0f ? beta * *dst : 0.0f);
        }
    }
}

// The whole matrix to f16 rows out_row.. of `out` (for products over many rows, which cuBLAS
// then runs): one thread per group of 8 values.
extern "C" __global__ void dequant_f16(unsigned short* out, const unsigned char* w, int rows,
                                       int in, int row_bytes, int ty, int out_row) {
    const int groups = in / 8;
    const size_t n = (size_t)rows * groups;
    float v[8];
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        const size_t r = i / groups;
        const int k = (int)(i % groups);
        decode8(ty, w + r * row_bytes, k, v);
        unsigned short* o = out + (r + out_row) * in + (size_t)k * 8;
        for (int l = 0; l < 8; l++) o[l] = f2h(v[l]);
    }
}
