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

// Stores of a product's input: f32 or f16 (`half_out`), and optionally also rounded to 8
// bits for a quantized product (used by the attention kernel below and the decoder's step).
__device__ __forceinline__ void store(void* out, size_t i, float v, int half_out) {
    if (half_out) ((unsigned short*)out)[i] = f2h(v);
    else ((float*)out)[i] = v;
}

// Value i of a block of 32 (one per lane of a warp, i's block aligned to 32) to 8 bits:
// q = rint(v / d) with d = max|v| / 127 over the block; s[block] = (d, d·Σq). As
// reference::quantize_q8. Every lane of the warp calls it.
__device__ __forceinline__ void q8_lane(signed char* q, float2* s, size_t i, float v) {
    float amax = fabsf(v);
    for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    const float d = amax / 127.0f;
    const int qi = amax == 0.0f ? 0 : __float2int_rn(v / d);
    int sum = qi;
    for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    q[i] = (signed char)qi;
    if ((threadIdx.x & 31) == 0) s[i / 32] = make_float2(d, d * (float)sum);
}

// store(), and when q is given also the value as stored (f16-rounded when half_out) to 8 bits
// for a quantized product's input: the value indices of a warp's lanes are one aligned block
// of 32 (blockDim.x and the row length multiples of 32).
__device__ __forceinline__ void store_q8(void* out, size_t i, float v, int half_out,
                                         signed char* q, float2* s) {
    store(out, i, v, half_out);
    if (q) q8_lane(q, s, i, half_out ? h2f(f2h(v)) : v);
}

// ---- The decoder's step (runner.rs) -------------------------------------------------------
// Matrix products run in cuBLAS; these kernels do everything between them. Inputs of a matrix
// product are f32 or f16 (`half_out`), as the weights are.

// One block per token: row ids[r] of the f32 embedding table, times scale.
extern "C" __global__ void embed_rows(float* out, const float* table, const unsigned* ids,
                                     int cols, float scale) {
    const float* src = table + (size_t)ids[blockIdx.x] * cols;
    float* o = out + (size_t)blockIdx.x * cols;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) o[i] = src[i] * scale;
}

// Four consecutive values (4·i4 .. 4·i4 + 3, a lane's share of an aligned block of 32 held by
// eight consecutive lanes) to 8 bits, as q8_lane does one value: the same scale, the same
// rounded values, the same sums. Every lane of the warp calls it (`store`: whether this lane's
// group of eight writes; a group writes all or none).
__device__ __forceinline__ void q8_quad(signed char* q, float2* s, size_t i4, float4 v,
                                        bool store) {
    float amax = fmaxf(fmaxf(fabsf(v.x), fabsf(v.y)), fmaxf(fabsf(v.z), fabsf(v.w)));
    for (int o = 4; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    const float d = amax / 127.0f;
    const int a = amax == 0.0f ? 0 : __float2int_rn(v.x / d);
    const int b = amax == 0.0f ? 0 : __float2int_rn(v.y / d);
    const int c = amax == 0.0f ? 0 : __float2int_rn(v.z / d);
    const int e = amax == 0.0f ? 0 : __float2int_rn(v.w / d);
    int sum = a + b + c + e;
    for (int o = 4; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    if (store) {
        ((char4*)q)[i4] = make_char4((signed char)a, (signed char)b, (signed char)c,
                                     (signed char)e);
        if ((threadIdx.x & 7) == 0) s[i4 / 8] = make_float2(d, d * (float)sum);
    }
}

// Values per thread the register path of rms_norm_rows keeps (in float4s).
#define NORM_VEC 4

// One block per row: row rows[r] of x (or row r when rows is null), RMS-normalized with
// weight w (the effective scale: Gemma's 1 + w already added), to out as f32 or f16.
// With q, the rows also go to 8 bits (store_q8, or q8_quad: the same values).
// Rows of a multiple of 32 values up to 4 · NORM_VEC · blockDim.x take the register path: each
// thread loads its float4s of the row and of w at once and keeps them for the second pass, so
// the kernel waits for memory once (the loop below waits once per iteration and pass).
extern "C" __global__ void __launch_bounds__(1024) rms_norm_rows(void* out, const float* x, const unsigned* rows,
                                         const float* w, int cols, float eps, int half_out,
                                         signed char* q, float2* s) {
    const size_t src = (size_t)(rows ? rows[blockIdx.x] : blockIdx.x) * cols;
    const float* xr = x + src;
    const size_t dst = (size_t)blockIdx.x * cols;
    const int n4 = cols / 4;
    if (cols % 32 == 0 && n4 <= NORM_VEC * (int)blockDim.x) {
        float4 v[NORM_VEC], wv[NORM_VEC];
        float ss = 0.0f;
#pragma unroll
        for (int k = 0; k < NORM_VEC; k++) {
            const int i = k * blockDim.x + threadIdx.x;
            const bool in = i < n4;
            v[k] = in ? ((const float4*)xr)[i] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            wv[k] = in ? ((const float4*)w)[i] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        }
#pragma unroll
        for (int k = 0; k < NORM_VEC; k++)
            ss += v[k].x * v[k].x + v[k].y * v[k].y + v[k].z * v[k].z + v[k].w * v[k].w;
        ss = block_reduce(ss, false);
        const float inv = rsqrtf(ss / cols + eps);
#pragma unroll
        for (int k = 0; k < NORM_VEC; k++) {
            // The warp's lanes have consecutive float4s: groups of eight are whole blocks of 32,
            // each group inside the row or past it (n4 is a multiple of 8).
            if (k * (int)blockDim.x >= n4) break;
            const int i = k * blockDim.x + threadIdx.x;
            const bool in = i < n4;
            float4 o = make_float4(v[k].x * inv * wv[k].x, v[k].y * inv * wv[k].y,
                                   v[k].z * inv * wv[k].z, v[k].w * inv * wv[k].w);
            if (half_out) {
                const ushort4 h = make_ushort4(f2h(o.x), f2h(o.y), f2h(o.z), f2h(o.w));
                if (in) ((ushort4*)((unsigned short*)out + dst))[i] = h;
                o = make_float4(h2f(h.x), h2f(h.y), h2f(h.z), h2f(h.w));
            } else if (in) {
                ((float4*)((float*)out + dst))[i] = o;
            }
            if (q) q8_quad(q, s, dst / 4 + i, o, in);
        }
        return;
    }
    float ss = 0.0f;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) ss += xr[i] * xr[i];
    ss = block_reduce(ss, false);
    const float inv = rsqrtf(ss / cols + eps);
    for (int i = threadIdx.x; i < cols; i += blockDim.x)
        store_q8(out, dst + i, xr[i] * inv * w[i], half_out, q, s);
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
// act: 0 SiLU, 1 GELU (tanh), 2 GELU (erf), 3 ReLU. With q, also to 8 bits (store_q8).
extern "C" __global__ void gated_act(void* out, const float* gate_up, int rows, int ff, int act,
                                     int half_out, signed char* q, float2* s) {
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
        store_q8(out, i, a * u, half_out, q, s);
    }
}

// f32 → f32 or f16 copy (the attention output into the output projection's input type); with
// q, also to 8 bits (store_q8).
extern "C" __global__ void convert(void* out, const float* x, int n, int half_out,
                                   signed char* q, float2* s) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        store_q8(out, i, x[i], half_out, q, s);
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

// ---- GGUF block-quantized weights, read as stored ------------------------------------------
// Rows in the device layout of forja_kernels::quant: each row's quantized values first (all
// blocks, 16-byte aligned), then the blocks' high bits and scales, each area starting 16-byte
// aligned. Types (QuantKind::code): 0 Q8_0, 1 Q4_0, 2 Q4_1, 3 Q4_K, 4 Q6_K, 5 Q5_0, 6 Q5_1,
// 7 Q5_K, 8 Q3_K, 9 Q2_K. Products over a few activation rows quantize the activations to 8 bits
// in blocks of 32 (quantize_q8) and sum with dp4a, as llama.cpp's mmvq does; over many rows the
// weight is dequantized to f16 (dequant_f16) for cuBLAS.

__device__ __forceinline__ float h2f_at(const unsigned char* p) {
    return h2f(*(const unsigned short*)p);
}

__device__ __forceinline__ int dp4a(int a, int b, int c) {
    int r;
    asm("dp4a.s32.s32 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(c));
    return r;
}

// Values per GGUF block of type ty: 256 for the K-quants, 32 for the others.
__host__ __device__ __forceinline__ constexpr int block_values(int ty) {
    return (ty == 3 || ty == 4 || ty >= 7) ? 256 : 32;
}

// Q5_0 / Q5_1 rows of nb blocks: qs at 0 (16 bytes a block), qh (4 a block) at q5_qh, the
// scales at q5_sc (the qh area padded to 16 bytes).
__device__ __forceinline__ size_t q5_qh(int nb) { return (size_t)nb * 16; }
__device__ __forceinline__ size_t q5_sc(int nb) {
    return (size_t)nb * 16 + (((size_t)nb * 4 + 15) & ~(size_t)15);
}

// Bits 0..3 of n to bit 0 of bytes 0..3 (the four shifted copies never overlap or carry).
__device__ __forceinline__ unsigned spread4(unsigned n) {
    return ((n & 0xFu) * 0x00204081u) & 0x01010101u;
}

// A fifth bit (16) on 16 bytes of nibbles: byte i gets bit i of h16 (Q5_0 / Q5_1).
__device__ __forceinline__ uint4 with_bits(uint4 w, unsigned h16) {
    return make_uint4(w.x | (spread4(h16) << 4), w.y | (spread4(h16 >> 4) << 4),
                      w.z | (spread4(h16 >> 8) << 4), w.w | (spread4(h16 >> 12) << 4));
}

// A fifth bit (16) on 16 bytes of nibbles: byte i gets bit `bit` of byte i of qh (Q5_K).
__device__ __forceinline__ uint4 with_bytes_bit(uint4 w, uint4 qh, int bit) {
    const unsigned m = 0x01010101u;
    return make_uint4(w.x | (((qh.x >> bit) & m) << 4), w.y | (((qh.y >> bit) & m) << 4),
                      w.z | (((qh.z >> bit) & m) << 4), w.w | (((qh.w >> bit) & m) << 4));
}

// Q3_K's signed 6-bit scale of sub-block `is` (0..15) from its 12 scale bytes: the low four
// bits from byte is % 8 (low nibble for is < 8, high after), the top two from byte 8 + is % 4
// (bits 2 (is / 4)), minus 32.
__device__ __forceinline__ int k3_scale(const unsigned char* sc, int is) {
    const int lo = is < 8 ? (sc[is & 7] & 0xF) : (sc[is & 7] >> 4);
    const int hi = (sc[8 + (is & 3)] >> (2 * (is / 4))) & 3;
    return (lo | (hi << 4)) - 32;
}

// Q3_K's 3-bit values of four bytes as signed bytes (q - 4): two bits from `lo` at lo_shift,
// the third from `hi` at hi_shift.
__device__ __forceinline__ unsigned three_bits1(unsigned lo, unsigned hi, int lo_shift,
                                                int hi_shift) {
    const unsigned q = ((lo >> lo_shift) & 0x03030303u) | (((hi >> hi_shift) & 0x01010101u) << 2);
    return (q + 0x7C7C7C7Cu) ^ 0x80808080u;  // each byte q - 4, no carries (q < 8)
}

// Byte i (0..15) of a 16-byte word, for i known at compile time after unrolling or not.
__device__ __forceinline__ int byte_of(uint4 w, int i) {
    const unsigned v = i < 4 ? w.x : i < 8 ? w.y : i < 12 ? w.z : w.w;
    return (v >> (8 * (i & 3))) & 0xFF;
}

// Q4_K's 6-bit scale and min of sub-block j (0..7) from the 12 scale bytes (bytes 4..15 of hd),
// without branches (j is not known at compile time).
__device__ __forceinline__ void k4_scale_min(uint4 hd, int j, int* sc, int* m) {
    const int lo = byte_of(hd, 4 + (j & 3)), hi = byte_of(hd, 8 + (j & 3));
    const int top = byte_of(hd, 12 + (j & 3));
    *sc = j < 4 ? (lo & 63) : ((top & 0xF) | ((lo >> 6) << 4));
    *m = j < 4 ? (hi & 63) : ((top >> 4) | ((hi >> 6) << 4));
}

// Group k (8 consecutive values) of a row of nb blocks, as f32.
__device__ void decode8(int ty, const unsigned char* row, int nb, int k, float* v) {
    if (ty == 3 || ty == 7) {
        // Q4_K: values 64c + l (low nibble of qs[32c + l]) and 64c + 32 + l (high), in
        // sub-blocks 2c and 2c + 1; Q5_K adds bit (sub-block) of qh[l] as 16.
        const int b = k / 32, t = k % 32, c = t / 8, p = t % 8;
        const uint4 hd = *(const uint4*)(row + (size_t)nb * 128 + b * 16);
        int sc, m;
        k4_scale_min(hd, 2 * c + p / 4, &sc, &m);
        const float d = h2f((unsigned short)(hd.x & 0xFFFF)) * (float)sc;
        const float dm = h2f((unsigned short)(hd.x >> 16)) * (float)m;
        const uint2 q = *(const uint2*)(row + (size_t)b * 128 + c * 32 + (p % 4) * 8);
        uint2 h = make_uint2(0, 0);
        if (ty == 7) {
            const uint2 qh = *(const uint2*)(row + (size_t)nb * 144 + b * 32 + (p % 4) * 8);
            const int bit = 2 * c + p / 4;
            h = make_uint2(((qh.x >> bit) & 0x01010101u) << 4, ((qh.y >> bit) & 0x01010101u) << 4);
        }
        const int shift = 4 * (p / 4);
        for (int l = 0; l < 4; l++) {
            v[l] = d * (float)(((q.x >> (8 * l + shift)) & 0xF) | ((h.x >> (8 * l)) & 0xFF)) - dm;
            v[l + 4] =
                d * (float)(((q.y >> (8 * l + shift)) & 0xF) | ((h.y >> (8 * l)) & 0xFF)) - dm;
        }
    } else if (ty == 9) {
        // Q2_K: value n·128 + j·32 + l is bits 2j of qs[32n + l], times d · (scale & 15), minus
        // dmin · (scale >> 4), scale = scales[8n + 2j + l / 16].
        const int b = k / 32, t = k % 32, n = t / 16, j = (t % 16) / 4, l0 = (t % 4) * 8;
        const int sc = row[(size_t)nb * 64 + b * 16 + n * 8 + 2 * j + l0 / 16];
        const unsigned char* dd = row + (size_t)nb * 80 + b * 4;
        const float dl = h2f_at(dd) * (float)(sc & 0xF), ml = h2f_at(dd + 2) * (float)(sc >> 4);
        const unsigned char* q = row + (size_t)b * 64 + n * 32 + l0;
        for (int l = 0; l < 8; l++) v[l] = dl * (float)((q[l] >> (2 * j)) & 3) - ml;
    } else if (ty == 8) {
        // Q3_K: value n·128 + j·32 + l is bits 2j of qs[32n + l] and bit 4n + j of hmask[l],
        // minus 4, times d and the scale of sub-block 8n + 2j + l / 16.
        const int b = k / 32, t = k % 32, n = t / 16, j = (t % 16) / 4, l0 = (t % 4) * 8;
        const unsigned char* sc = row + (size_t)nb * 96 + b * 16;
        const float dl = h2f_at(sc + 12) * (float)k3_scale(sc, n * 8 + 2 * j + l0 / 16);
        const unsigned char* q = row + (size_t)b * 64 + n * 32 + l0;
        const unsigned char* hm = row + (size_t)nb * 64 + b * 32 + l0;
        for (int l = 0; l < 8; l++)
            v[l] = dl * (float)((((q[l] >> (2 * j)) & 3) | (((hm[l] >> (4 * n + j)) & 1) << 2)) -
                                4);
    } else if (ty == 5 || ty == 6) {
        // Q5_0 ((q - 16) d) / Q5_1 (q d + m), q = nibble | bit j of qh as 16: values 0..15
        // the low nibbles, 16..31 the high ones.
        const int b = k / 4, j0 = (k % 4) * 8;
        const unsigned char* s = row + q5_sc(nb) + b * (ty == 5 ? 2 : 4);
        const float d = h2f_at(s);
        const float m = ty == 5 ? -16.0f * d : h2f_at(s + 2);
        const unsigned qh = *(const unsigned*)(row + q5_qh(nb) + b * 4);
        const unsigned char* q = row + (size_t)b * 16 + (k % 2) * 8;
        const int shift = (k % 4) < 2 ? 0 : 4;
        for (int l = 0; l < 8; l++)
            v[l] = d * (float)(((q[l] >> shift) & 0xF) | (((qh >> (j0 + l)) & 1) << 4)) + m;
    } else if (ty == 4) {  // Q6_K: halves of 128 values, each four groups of 32 (sub-block g)
        const int b = k / 32, t = k % 32, n = t / 16, g = (t % 16) / 4, l0 = (t % 4) * 8;
        const unsigned char* ql = row + (size_t)b * 128 + n * 64 + (g & 1) * 32 + l0;
        const unsigned char* qh = row + (size_t)nb * 128 + b * 64 + n * 32 + l0;
        const signed char* sc = (const signed char*)(row + (size_t)nb * 192 + b * 16 + n * 8);
        const float ds = h2f_at(row + (size_t)nb * 208 + b * 2) * (float)sc[l0 / 16 + 2 * g];
        for (int l = 0; l < 8; l++) {
            const int lo = (g < 2) ? (ql[l] & 0xF) : (ql[l] >> 4);
            v[l] = ds * (float)((lo | (((qh[l] >> (2 * g)) & 3) << 4)) - 32);
        }
    } else if (ty == 0) {  // Q8_0
        const int b = k / 4;
        const float d = h2f_at(row + (size_t)nb * 32 + b * 2);
        const signed char* q = (const signed char*)(row + (size_t)b * 32 + (k % 4) * 8);
        for (int l = 0; l < 8; l++) v[l] = d * (float)q[l];
    } else {  // Q4_0 (value (q - 8) d) / Q4_1 (q d + m): low nibbles 0..15, high 16..31
        const int b = k / 4;
        const unsigned char* s = row + (size_t)nb * 16 + b * (ty == 1 ? 2 : 4);
        const float d = h2f_at(s);
        const float m = ty == 1 ? -8.0f * d : h2f_at(s + 2);
        const unsigned char* q = row + (size_t)b * 16 + (k % 2) * 8;
        const int shift = (k % 4) < 2 ? 0 : 4;
        for (int l = 0; l < 8; l++) v[l] = d * (float)((q[l] >> shift) & 0xF) + m;
    }
}

// Activation values to 8 bits per block of 32 (one warp a block): q = rint(x / d) with
// d = max|x| / 127; s[block] = (d, d·Σq). As reference::quantize_q8.
extern "C" __global__ void quantize_q8(signed char* q, float2* s, const void* x, int n,
                                       int x_half) {
    const int blk = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, lane = threadIdx.x & 31;
    if (blk >= n / 32) return;
    const size_t i = (size_t)blk * 32 + lane;
    q8_lane(q, s, i, x_half ? h2f(((const unsigned short*)x)[i]) : ((const float*)x)[i]);
}

// A lane's unit of a weight row, loaded once and multiplied with each activation row. Units
// per block: Q8_0/Q4_0/Q4_1/Q5_0/Q5_1 one (32 values), Q4_K/Q5_K eight (32 values: 16 of two
// sub-blocks), Q6_K/Q3_K/Q2_K four (64 values: 16 of four sub-blocks).
struct Unit {
    uint4 a, b, c;  // quantized values (Q5_0/Q5_1: qh in b.x; Q5_K: qh in b, its bit in c.x;
                    // Q3_K: hmask in b, the half in c.x)
    float f[4];     // per-type scales
    float m[4];     // Q2_K: its sub-blocks' mins
    int x;          // first activation value (in the row) the unit multiplies
    int xb;         // its activation block
};

template <int TY>
__device__ __forceinline__ Unit load_unit(const unsigned char* row, int nb, int u) {
    Unit t;
    if (TY == 0) {
        t.a = *(const uint4*)(row + (size_t)u * 32);
        t.b = *(const uint4*)(row + (size_t)u * 32 + 16);
        t.f[0] = h2f_at(row + (size_t)nb * 32 + u * 2);
        t.x = u * 32;
        t.xb = u;
    } else if (TY == 1 || TY == 2) {
        t.a = *(const uint4*)(row + (size_t)u * 16);
        const unsigned char* s = row + (size_t)nb * 16 + u * (TY == 1 ? 2 : 4);
        t.f[0] = h2f_at(s);
        t.f[1] = TY == 1 ? -8.0f * t.f[0] : h2f_at(s + 2);
        t.x = u * 32;
        t.xb = u;
    } else if (TY == 5 || TY == 6) {
        t.a = *(const uint4*)(row + (size_t)u * 16);
        t.b.x = *(const unsigned*)(row + q5_qh(nb) + u * 4);
        const unsigned char* s = row + q5_sc(nb) + u * (TY == 5 ? 2 : 4);
        t.f[0] = h2f_at(s);
        t.f[1] = TY == 5 ? -16.0f * t.f[0] : h2f_at(s + 2);
        t.x = u * 32;
        t.xb = u;
    } else if (TY == 9) {
        // As Q3_K, with each sub-block's min.
        const int b = u / 4, n = (u % 4) / 2, l0 = (u % 2) * 16;
        t.a = *(const uint4*)(row + (size_t)b * 64 + n * 32 + l0);
        const unsigned char* sc = row + (size_t)nb * 64 + b * 16 + n * 8 + l0 / 16;
        const unsigned char* dd = row + (size_t)nb * 80 + b * 4;
        const float d = h2f_at(dd), dmin = h2f_at(dd + 2);
        for (int g = 0; g < 4; g++) {
            t.f[g] = d * (float)(sc[2 * g] & 0xF);
            t.m[g] = dmin * (float)(sc[2 * g] >> 4);
        }
        t.x = b * 256 + n * 128 + l0;
        t.xb = b * 8 + n * 4;
    } else if (TY == 8) {
        // As Q6_K: 16 values of each of the four sub-block pairs of a half.
        const int b = u / 4, n = (u % 4) / 2, l0 = (u % 2) * 16;
        t.a = *(const uint4*)(row + (size_t)b * 64 + n * 32 + l0);
        t.b = *(const uint4*)(row + (size_t)nb * 64 + b * 32 + l0);
        const unsigned char* sc = row + (size_t)nb * 96 + b * 16;
        const float d = h2f_at(sc + 12);
        for (int g = 0; g < 4; g++) t.f[g] = d * (float)k3_scale(sc, n * 8 + 2 * g + l0 / 16);
        t.c.x = n;
        t.x = b * 256 + n * 128 + l0;
        t.xb = b * 8 + n * 4;
    } else if (TY == 3 || TY == 7) {
        const int b = u / 8, w = u % 8, c = w / 2, h = w % 2;
        t.a = *(const uint4*)(row + (size_t)b * 128 + w * 16);
        if (TY == 7) {
            t.b = *(const uint4*)(row + (size_t)nb * 144 + b * 32 + h * 16);
            t.c.x = 2 * c;
        }
        const uint4 hd = *(const uint4*)(row + (size_t)nb * 128 + b * 16);
        const float d = h2f((unsigned short)(hd.x & 0xFFFF));
        const float dmin = h2f((unsigned short)(hd.x >> 16));
        int sc, m;
        k4_scale_min(hd, 2 * c, &sc, &m);
        t.f[0] = d * (float)sc;
        t.f[2] = h == 0 ? dmin * (float)m : 0.0f;  // the sub-block's min, added by one lane
        k4_scale_min(hd, 2 * c + 1, &sc, &m);
        t.f[1] = d * (float)sc;
        t.f[3] = h == 0 ? dmin * (float)m : 0.0f;
        t.x = b * 256 + c * 64 + h * 16;
        t.xb = b * 8 + c * 2;
    } else {
        const int b = u / 4, n = (u % 4) / 2, l0 = (u % 2) * 16;
        const unsigned char* ql = row + (size_t)b * 128 + n * 64 + l0;
        t.a = *(const uint4*)ql;
        t.b = *(const uint4*)(ql + 32);
        t.c = *(const uint4*)(row + (size_t)nb * 128 + b * 64 + n * 32 + l0);
        const uint2 sc = *(const uint2*)(row + (size_t)nb * 192 + b * 16 + n * 8);
        const float d = h2f_at(row + (size_t)nb * 208 + b * 2);
        const int i0 = u % 2;  // scale (i0 + 2g) of the half's eight
        for (int g = 0; g < 4; g++) {
            const int i = i0 + 2 * g;
            const unsigned word = i < 4 ? sc.x : sc.y;
            t.f[g] = d * (float)(signed char)((word >> (8 * (i & 3))) & 0xFF);
        }
        t.x = b * 256 + n * 128 + l0;
        t.xb = b * 8 + n * 4;
    }
    return t;
}

__device__ __forceinline__ uint4 nibbles(uint4 w, int shift) {
    const unsigned m = 0x0F0F0F0Fu;
    return make_uint4((w.x >> shift) & m, (w.y >> shift) & m, (w.z >> shift) & m,
                      (w.w >> shift) & m);
}

// Q6_K's 6-bit values of four bytes as signed bytes (q - 32): low 4 bits from `lo`, high 2
// bits from `hi`.
__device__ __forceinline__ unsigned six_bits1(unsigned lo, unsigned hi, int lo_shift,
                                              int hi_shift) {
    const unsigned q = ((lo >> lo_shift) & 0x0F0F0F0Fu) | (((hi >> hi_shift) & 0x03030303u) << 4);
    return (q + 0x60606060u) ^ 0x80808080u;  // each byte q - 32, no carries (q < 64)
}

// The same for 16 bytes (group g of a Q6_K unit).
__device__ __forceinline__ uint4 six_bits(uint4 lo, uint4 hi, int lo_shift, int hi_shift) {
    return make_uint4(six_bits1(lo.x, hi.x, lo_shift, hi_shift),
                      six_bits1(lo.y, hi.y, lo_shift, hi_shift),
                      six_bits1(lo.z, hi.z, lo_shift, hi_shift),
                      six_bits1(lo.w, hi.w, lo_shift, hi_shift));
}

// The activations a unit multiplies, for one activation row (xq: the row's 8-bit values, xs:
// its blocks' (d, d·Σq)): loaded once and used for every weight row a warp computes.
struct XUnit {
    uint4 q[4];
    float d[4];
    float s[2];
};

template <int TY>
__device__ __forceinline__ XUnit load_x(const Unit& t, const signed char* xq, const float2* xs) {
    XUnit v;
    const signed char* x = xq + t.x;
    if (TY == 4 || TY >= 8) {
        for (int g = 0; g < 4; g++) {
            v.q[g] = *(const uint4*)(x + 32 * g);
            v.d[g] = xs[t.xb + g].x;
        }
    } else {
        // Q4_K/Q5_K: 16 values of two blocks, 32 apart; the others: one whole block.
        v.q[0] = *(const uint4*)x;
        v.q[1] = *(const uint4*)(x + (TY == 3 || TY == 7 ? 32 : 16));
        const float2 a = xs[t.xb];
        v.d[0] = a.x;
        v.s[0] = a.y;
        if (TY == 3 || TY == 7) {
            const float2 b = xs[t.xb + 1];
            v.d[1] = b.x;
            v.s[1] = b.y;
        }
    }
    return v;
}

__device__ __forceinline__ int dot16(uint4 w, uint4 x) {
    return dp4a((int)w.w, (int)x.w, dp4a((int)w.z, (int)x.z,
                dp4a((int)w.y, (int)x.y, dp4a((int)w.x, (int)x.x, 0))));
}

// The unit's share of one activation row's dot product.
template <int TY>
__device__ __forceinline__ float unit_dot(const Unit& t, const XUnit& x) {
    if (TY == 0) {
        const int s = dot16(t.b, x.q[1]) + dot16(t.a, x.q[0]);
        return t.f[0] * x.d[0] * (float)s;
    } else if (TY == 1 || TY == 2) {
        const int s = dot16(nibbles(t.a, 4), x.q[1]) + dot16(nibbles(t.a, 0), x.q[0]);
        return t.f[0] * x.d[0] * (float)s + t.f[1] * x.s[0];
    } else if (TY == 5 || TY == 6) {
        const int s = dot16(with_bits(nibbles(t.a, 4), t.b.x >> 16), x.q[1]) +
                      dot16(with_bits(nibbles(t.a, 0), t.b.x & 0xFFFF), x.q[0]);
        return t.f[0] * x.d[0] * (float)s + t.f[1] * x.s[0];
    } else if (TY == 3 || TY == 7) {
        uint4 l4 = nibbles(t.a, 0), h4 = nibbles(t.a, 4);
        if (TY == 7) {
            l4 = with_bytes_bit(l4, t.b, (int)t.c.x);
            h4 = with_bytes_bit(h4, t.b, (int)t.c.x + 1);
        }
        const int lo = dot16(l4, x.q[0]), hi = dot16(h4, x.q[1]);
        return t.f[0] * x.d[0] * (float)lo + t.f[1] * x.d[1] * (float)hi -
               (t.f[2] * x.s[0] + t.f[3] * x.s[1]);
    } else if (TY == 9) {
        float r = 0.0f;
        const uint4 ones = make_uint4(0x01010101u, 0x01010101u, 0x01010101u, 0x01010101u);
        for (int g = 0; g < 4; g++) {
            const int sh = 2 * g;
            const uint4 w = make_uint4((t.a.x >> sh) & 0x03030303u, (t.a.y >> sh) & 0x03030303u,
                                       (t.a.z >> sh) & 0x03030303u, (t.a.w >> sh) & 0x03030303u);
            r += x.d[g] * (t.f[g] * (float)dot16(w, x.q[g]) - t.m[g] * (float)dot16(ones, x.q[g]));
        }
        return r;
    } else if (TY == 8) {
        float r = 0.0f;
        const int n = (int)t.c.x;
        for (int g = 0; g < 4; g++) {
            const uint4 w = make_uint4(three_bits1(t.a.x, t.b.x, 2 * g, 4 * n + g),
                                       three_bits1(t.a.y, t.b.y, 2 * g, 4 * n + g),
                                       three_bits1(t.a.z, t.b.z, 2 * g, 4 * n + g),
                                       three_bits1(t.a.w, t.b.w, 2 * g, 4 * n + g));
            r += t.f[g] * x.d[g] * (float)dot16(w, x.q[g]);
        }
        return r;
    } else {
        float r = 0.0f;
        for (int g = 0; g < 4; g++) {
            const uint4 lo = (g & 1) ? t.b : t.a;
            const int s = dot16(six_bits(lo, t.c, 4 * (g / 2), 2 * g), x.q[g]);
            r += t.f[g] * x.d[g] * (float)s;
        }
        return r;
    }
}

// y[r, y_col + o] = Σ_k x[r, k] · w[o, k] (+ beta · y[r, y_col + o]) for activation rows
// row0 ≤ r < row0 + rows, rows ≤ ROWS (quantized by quantize_q8; y rows ldy apart). A warp
// computes OPW consecutive output rows (each activation unit loaded once for all of them), its
// lanes taking every 32nd unit of the rows, DEPTH units of each row loaded before any is used
// (so each lane has OPW · DEPTH loads in flight; a unit past the row's end, or a row past the
// last, loads the last one again and adds nothing).
template <int TY, int UNITS, int ROWS, int OPW, int DEPTH>
__device__ void gemv(float* y, const unsigned char* w, const signed char* xq, const float2* xs,
                     int rows, int out, int in, int stride, float beta, int ldy, int y_col,
                     int row0) {
    const int o0 = ((blockIdx.x * blockDim.x + threadIdx.x) >> 5) * OPW, lane = threadIdx.x & 31;
    if (o0 >= out) return;
    xq += (size_t)row0 * in;
    xs += (size_t)row0 * (in / 32);
    y += (size_t)row0 * ldy;
    const unsigned char* wr[OPW];
#pragma unroll
    for (int j = 0; j < OPW; j++) wr[j] = w + (size_t)min(o0 + j, out - 1) * stride;
    const int nb = in / block_values(TY), units = nb * UNITS;
    float acc[OPW][ROWS];
#pragma unroll
    for (int j = 0; j < OPW; j++)
#pragma unroll
        for (int r = 0; r < ROWS; r++) acc[j][r] = 0.0f;
    for (int u0 = lane; u0 < units; u0 += 32 * DEPTH) {
        Unit t[DEPTH][OPW];
#pragma unroll
        for (int i = 0; i < DEPTH; i++)
#pragma unroll
            for (int j = 0; j < OPW; j++)
                t[i][j] = load_unit<TY>(wr[j], nb, min(u0 + 32 * i, units - 1));
#pragma unroll
        for (int i = 0; i < DEPTH; i++) {
            if (u0 + 32 * i < units) {
#pragma unroll
                for (int r = 0; r < ROWS; r++) {
                    if (ROWS == 1 || r < rows) {
                        const XUnit x = load_x<TY>(t[i][0], xq + (size_t)r * in,
                                                   xs + (size_t)r * (in / 32));
#pragma unroll
                        for (int j = 0; j < OPW; j++) acc[j][r] += unit_dot<TY>(t[i][j], x);
                    }
                }
            }
        }
    }
#pragma unroll
    for (int j = 0; j < OPW; j++) {
#pragma unroll
        for (int r = 0; r < ROWS; r++) {
            if (ROWS == 1 || r < rows) {
                float s = acc[j][r];
                for (int m = 16; m > 0; m >>= 1) s += __shfl_xor_sync(0xffffffffu, s, m);
                if (lane == 0 && o0 + j < out) {
                    float* dst = y + (size_t)r * ldy + y_col + o0 + j;
                    *dst = s + (beta != 0.0f ? beta * *dst : 0.0f);
                }
            }
        }
    }
}

// One kernel per type (each gets the registers its own unit needs) and for one activation row
// (decode of one sequence: two output rows a warp, four units of each in flight) or up to eight
// (two or four output rows a warp, whichever was faster on an H200 for the type); 128 threads a
// block. QuantKind::gemv_kernel (quant.rs) must name the same output rows per warp.
#define GEMV_KERNEL(NAME, TY, UNITS, ROWS, OPW, DEPTH)                                       \
    extern "C" __global__ void __launch_bounds__(128)                                      \
        NAME(float* y, const unsigned char* w, const signed char* xq, const float2* xs,    \
             int rows, int out, int in, int stride, float beta, int ldy, int y_col,        \
             int row0) {                                                                   \
        gemv<TY, UNITS, ROWS, OPW, DEPTH>(y, w, xq, xs, rows, out, in, stride, beta, ldy,  \
                                          y_col, row0);                                    \
    }
GEMV_KERNEL(gemv_q8_0_1, 0, 1, 1, 2, 4)
GEMV_KERNEL(gemv_q4_0_1, 1, 1, 1, 2, 4)
GEMV_KERNEL(gemv_q4_1_1, 2, 1, 1, 2, 4)
GEMV_KERNEL(gemv_q4_k_1, 3, 8, 1, 2, 4)
GEMV_KERNEL(gemv_q5_0_1, 5, 1, 1, 2, 4)
GEMV_KERNEL(gemv_q5_1_1, 6, 1, 1, 2, 4)
GEMV_KERNEL(gemv_q5_k_1, 7, 8, 1, 2, 4)
GEMV_KERNEL(gemv_q3_k_1, 8, 4, 1, 2, 4)
GEMV_KERNEL(gemv_q2_k_1, 9, 4, 1, 2, 4)
GEMV_KERNEL(gemv_q6_k_1, 4, 4, 1, 2, 4)
GEMV_KERNEL(gemv_q8_0_8, 0, 1, 8, 4, 1)
GEMV_KERNEL(gemv_q4_0_8, 1, 1, 8, 2, 2)
GEMV_KERNEL(gemv_q4_1_8, 2, 1, 8, 2, 2)
GEMV_KERNEL(gemv_q4_k_8, 3, 8, 8, 2, 2)
GEMV_KERNEL(gemv_q5_0_8, 5, 1, 8, 2, 2)
GEMV_KERNEL(gemv_q5_1_8, 6, 1, 8, 2, 2)
GEMV_KERNEL(gemv_q5_k_8, 7, 8, 8, 2, 2)
GEMV_KERNEL(gemv_q3_k_8, 8, 4, 8, 4, 1)
GEMV_KERNEL(gemv_q2_k_8, 9, 4, 8, 4, 1)
GEMV_KERNEL(gemv_q6_k_8, 4, 4, 8, 4, 1)

// One block per token: row ids[r] of an embedding table kept as f16 bit patterns, times scale.
extern "C" __global__ void embed_rows_f16(float* out, const unsigned short* table,
                                         const unsigned* ids, int cols, float scale) {
    const unsigned short* src = table + (size_t)ids[blockIdx.x] * cols;
    float* o = out + (size_t)blockIdx.x * cols;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) o[i] = h2f(src[i]) * scale;
}

// One block per token: row ids[r] of an embedding table kept as GGUF blocks (the device
// layout, rows `stride` bytes apart, type code ty as dequant_f16), times scale — the table stays
// as the file stores it (Llama 3 8B's table in a Q4_K_M file: Q4_K, 0.3 GB; 2.1 GB in f32).
extern "C" __global__ void embed_rows_quant(float* out, const unsigned char* table,
                                           const unsigned* ids, int cols, int stride, int ty,
                                           float scale) {
    const unsigned char* row = table + (size_t)ids[blockIdx.x] * stride;
    float* o = out + (size_t)blockIdx.x * cols;
    const int nb = cols / block_values(ty);
    float v[8];
    for (int k = threadIdx.x; k < cols / 8; k += blockDim.x) {
        decode8(ty, row, nb, k, v);
        for (int l = 0; l < 8; l++) o[k * 8 + l] = v[l] * scale;
    }
}

// The whole matrix to f16 rows out_row.. of `out` (for products over many rows, which cuBLAS
// then runs): one thread per group of 8 values, stored as one 16-byte word. rows · in / 8 <
// 2^32 (checked by the caller).
extern "C" __global__ void dequant_f16(unsigned short* out, const unsigned char* w, int rows,
                                       int in, int stride, int ty, int out_row) {
    const unsigned groups = in / 8, nb = in / block_values(ty);
    const unsigned n = (unsigned)rows * groups;
    float v[8];
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        const unsigned r = i / groups, k = i - r * groups;
        decode8(ty, w + (size_t)r * stride, nb, k, v);
        unsigned h[4];
        for (int l = 0; l < 4; l++) h[l] = f2h(v[2 * l]) | ((unsigned)f2h(v[2 * l + 1]) << 16);
        *(uint4*)(out + ((size_t)r + out_row) * in + (size_t)k * 8) =
            make_uint4(h[0], h[1], h[2], h[3]);
    }
}
