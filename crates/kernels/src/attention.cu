
// forja's paged attention (kernels.cu's helpers come first in the source NVRTC compiles).

// Attention over the paged cache, one block per (G query heads of one KV group, query row):
// row r belongs to sequence row_seqs[r] (its row of block_tables) and sees that sequence's
// first context_lens[r] positions (its own position + 1: decode rows see everything, prefill
// rows are causal), the last `window` of them when window > 0. softcap > 0 caps scores as
// cap·tanh(s / cap). The block reads each key and value row once for its G heads (grouped-query
// attention: the heads of a group share them). Each warp takes every ATT_WARPS-th position,
// ATT_POS of them at a time (their table entries, then their key or value rows, loaded before
// any is used: a short context costs a few memory round trips, not one per position); its lanes
// take four consecutive dims each (8-byte loads, a row in one coalesced access; C such chunks
// of 128 dims), and the G dot products are summed over the lanes together (`warp_sum_heads`);
// scores wait in shared memory for the softmax, then each warp sums its positions' values over
// its lanes' dims for the G heads and the warps' partial sums are added, then written as f32 or
// f16 (and, with q8, also in 8 bits for a quantized product). head_dim ≤ 128·C, a multiple of 4.
// Split-K: a row's positions come in parts of `part`, one block each (grid z). A row of one
// part is written as above; otherwise each block leaves each head's unnormalized sums, max and
// exponent sum in `partials` (stride head_dim + 2, slot (r·heads + h)·gridDim.z + z), and the
// last of the row's blocks to finish (counted in `arrivals` at the block's first head, which it
// resets to 0) combines them. Blocks past the row's last part return at once.
#define ATT_WARPS 8
#define ATT_POS 4
// Most parts of a split row (the combining block keeps a weight per head and part).
#define ATT_MAX_PARTS 128

// The rows of ATT_POS positions t0 + p·ATT_WARPS (past the last: the last again) of one
// kv head in a paged cache, four halves per lane and chunk (lanes lane + 32·c).
template <int C>
__device__ __forceinline__ void att_rows(uint2 (&r)[ATT_POS][C], const unsigned short* cache,
                                         const unsigned* table, int block_size, int first,
                                         int t0, int n, size_t width, size_t head_off,
                                         int lane, int quads) {
    const unsigned short* p[ATT_POS];
#pragma unroll
    for (int k = 0; k < ATT_POS; k++) {
        const int j = first + min(t0 + k * ATT_WARPS, n - 1);
        const size_t slot = (size_t)table[j / block_size] * block_size + j % block_size;
        p[k] = cache + slot * width + head_off;
    }
#pragma unroll
    for (int k = 0; k < ATT_POS; k++)
#pragma unroll
        for (int c = 0; c < C; c++) {
            const int i = lane + 32 * c;
            r[k][c] = i < quads ? ((const uint2*)p[k])[i] : make_uint2(0u, 0u);
        }
}

__device__ __forceinline__ float4 h4(uint2 v) {
    return make_float4(h2f((unsigned short)(v.x & 0xFFFF)), h2f((unsigned short)(v.x >> 16)),
                       h2f((unsigned short)(v.y & 0xFFFF)), h2f((unsigned short)(v.y >> 16)));
}

// G rounded up to a power of two, and its log.
template <int G> struct HeadsPow2 {
    static constexpr int P = G <= 1 ? 1 : G <= 2 ? 2 : G <= 4 ? 4 : 8;
    static constexpr int L = G <= 1 ? 0 : G <= 2 ? 1 : G <= 4 ? 2 : 3;
};

// The head whose sum `warp_sum_heads` leaves in `lane` (P heads: the top L bits of the lane).
template <int G> __device__ __forceinline__ int att_head_of(int lane) {
    return lane >> (5 - HeadsPow2<G>::L);
}

// Sums G per-lane values over the warp, all at once: at each halving step a lane keeps half the
// heads and sends the other half to the lane across (P/2 + P/4 + … shuffles, then plain
// shuffles over the lanes left), instead of a full five-shuffle sum per head. Every lane gets
// the sum of head att_head_of<G>(lane) (0 for heads ≥ G).
template <int G> __device__ __forceinline__ float warp_sum_heads(const float (&d)[G], int lane) {
    constexpr int P = HeadsPow2<G>::P, L = HeadsPow2<G>::L;
    float v[P];
#pragma unroll
    for (int i = 0; i < P; i++) v[i] = i < G ? d[i] : 0.0f;
#pragma unroll
    for (int s = 0; s < L; s++) {
        const int half = P >> (s + 1);
        const bool hi = (lane >> (4 - s)) & 1;
#pragma unroll
        for (int i = 0; i < half; i++) {
            const float send = hi ? v[i] : v[i + half];
            const float keep = hi ? v[i + half] : v[i];
            v[i] = keep + __shfl_xor_sync(0xffffffffu, send, 16 >> s);
        }
    }
    float x = v[0];
#pragma unroll
    for (int o = 16 >> L; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}

template <int G, int C>
__device__ __forceinline__ void paged_attention(
    void* out, const float* q, const unsigned short* k_cache, const unsigned short* v_cache,
    const unsigned* block_tables, const unsigned* row_seqs, const unsigned* context_lens,
    int max_blocks, int block_size, int heads, int kv_heads, int head_dim, float scale,
    int window, float softcap, int half_out, signed char* q8, float2* s8, int part,
    float* partials, unsigned* arrivals) {
    extern __shared__ float shared[];
    __shared__ float red[ATT_WARPS][G];
    __shared__ float stat[2][G];
    __shared__ int last_block;
    const int h0 = blockIdx.x * G, r = blockIdx.y;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int ctx = (int)context_lens[r];
    const int visible = ctx - (window > 0 && ctx > window ? ctx - window : 0);
    const int parts = (visible + part - 1) / part;
    if ((int)blockIdx.z >= parts) return;
    const int first = ctx - visible + (int)blockIdx.z * part;
    const int n = min(part, ctx - first);
    const int g = h0 / (heads / kv_heads);
    const int quads = head_dim / 4;
    const size_t width = (size_t)kv_heads * head_dim, head_off = (size_t)g * head_dim;
    const unsigned* table = block_tables + (size_t)row_seqs[r] * max_blocks;
    const int gd = G * head_dim;
    float* qs = shared;       // [G][head_dim]
    float* scores = qs + gd;  // [G][n]; later the warps' sums [ATT_WARPS][G][head_dim], or
                              // the combining block's weights [G][parts]
    const float* qh = q + ((size_t)r * heads + h0) * head_dim;
    for (int i = threadIdx.x; i < gd; i += blockDim.x) qs[i] = qh[i];
    __syncthreads();
    float4 qv[G][C];
#pragma unroll
    for (int j = 0; j < G; j++)
#pragma unroll
        for (int c = 0; c < C; c++) {
            const int i = lane + 32 * c;
            qv[j][c] = i < quads ? ((const float4*)(qs + j * head_dim))[i]
                                 : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        }
    // Each lane ends up with the scores of one head (`mine`); the first lane of each such
    // group writes them.
    const int mine = att_head_of<G>(lane);
    const bool writer = mine < G && (lane & ((32 >> HeadsPow2<G>::L) - 1)) == 0;
    float m = __int_as_float(0xff800000);
    for (int t0 = warp; t0 < n; t0 += ATT_WARPS * ATT_POS) {
        uint2 kr[ATT_POS][C];
        att_rows<C>(kr, k_cache, table, block_size, first, t0, n, width, head_off, lane, quads);
#pragma unroll
        for (int k = 0; k < ATT_POS; k++) {
            float d[G];
#pragma unroll
            for (int j = 0; j < G; j++) d[j] = 0.0f;
#pragma unroll
            for (int c = 0; c < C; c++) {
                const float4 kf = h4(kr[k][c]);
#pragma unroll
                for (int j = 0; j < G; j++)
                    d[j] += qv[j][c].x * kf.x + qv[j][c].y * kf.y + qv[j][c].z * kf.z +
                            qv[j][c].w * kf.w;
            }
            float s = warp_sum_heads<G>(d, lane) * scale;
            if (softcap > 0.0f) s = softcap * tanhf(s / softcap);
            const int t = t0 + k * ATT_WARPS;
            if (t < n && mine < G) {
                if (writer) scores[mine * n + t] = s;
                m = fmaxf(m, s);
            }
        }
    }
    if (writer) red[warp][mine] = m;
    __syncthreads();
    if (threadIdx.x < G) {
        float top = red[0][threadIdx.x];
        for (int w = 1; w < ATT_WARPS; w++) top = fmaxf(top, red[w][threadIdx.x]);
        stat[0][threadIdx.x] = top;
    }
    __syncthreads();
    float sum[G];
#pragma unroll
    for (int j = 0; j < G; j++) {
        const float mj = stat[0][j];
        sum[j] = 0.0f;
        for (int t = threadIdx.x; t < n; t += blockDim.x) {
            const float e = expf(scores[j * n + t] - mj);
            scores[j * n + t] = e;
            sum[j] += e;
        }
        for (int o = 16; o > 0; o >>= 1) sum[j] += __shfl_xor_sync(0xffffffffu, sum[j], o);
    }
    if (lane == 0)
#pragma unroll
        for (int j = 0; j < G; j++) red[warp][j] = sum[j];
    __syncthreads();
    if (threadIdx.x < G) {
        float total = 0.0f;
        for (int w = 0; w < ATT_WARPS; w++) total += red[w][threadIdx.x];
        stat[1][threadIdx.x] = total;
    }
    float4 acc[G][C];
#pragma unroll
    for (int j = 0; j < G; j++)
#pragma unroll
        for (int c = 0; c < C; c++) acc[j][c] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    for (int t0 = warp; t0 < n; t0 += ATT_WARPS * ATT_POS) {
        uint2 vr[ATT_POS][C];
        att_rows<C>(vr, v_cache, table, block_size, first, t0, n, width, head_off, lane, quads);
#pragma unroll
        for (int k = 0; k < ATT_POS; k++) {
            const int t = t0 + k * ATT_WARPS;
            float p[G];
#pragma unroll
            for (int j = 0; j < G; j++) p[j] = t < n ? scores[j * n + t] : 0.0f;
#pragma unroll
            for (int c = 0; c < C; c++) {
                const float4 vf = h4(vr[k][c]);
#pragma unroll
                for (int j = 0; j < G; j++) {
                    acc[j][c].x += p[j] * vf.x;
                    acc[j][c].y += p[j] * vf.y;
                    acc[j][c].z += p[j] * vf.z;
                    acc[j][c].w += p[j] * vf.w;
                }
            }
        }
    }
    // Every warp is done with the scores: their space takes the warps' sums.
    __syncthreads();
    float* sums = scores;
#pragma unroll
    for (int j = 0; j < G; j++)
#pragma unroll
        for (int c = 0; c < C; c++) {
            const int i = lane + 32 * c;
            if (i < quads) ((float4*)(sums + (warp * G + j) * head_dim))[i] = acc[j][c];
        }
    __syncthreads();
    // The output as the next product reads it (store_q8: with q8, head_dim a multiple of 32, so
    // each warp's lanes hold one block of 32). The block's heads are consecutive: G·head_dim
    // values from o.
    const size_t o = ((size_t)r * heads + h0) * head_dim;
    if (parts == 1) {
        for (int i = threadIdx.x; i < gd; i += blockDim.x) {
            float v = 0.0f;
            for (int w = 0; w < ATT_WARPS; w++) v += sums[w * gd + i];
            store_q8(out, o + i, v / stat[1][i / head_dim], half_out, q8, s8);
        }
        return;
    }
    const size_t stride = head_dim + 2;
    for (int i = threadIdx.x; i < gd; i += blockDim.x) {
        const int j = i / head_dim;
        float v = 0.0f;
        for (int w = 0; w < ATT_WARPS; w++) v += sums[w * gd + i];
        partials[(((size_t)r * heads + h0 + j) * gridDim.z + blockIdx.z) * stride +
                 (i - j * head_dim)] = v;
    }
    if (threadIdx.x < G) {
        float* mine_slot =
            partials + (((size_t)r * heads + h0 + threadIdx.x) * gridDim.z + blockIdx.z) * stride;
        mine_slot[head_dim] = stat[0][threadIdx.x];
        mine_slot[head_dim + 1] = stat[1][threadIdx.x];
    }
    // Written before counted; the last block reads what every other one wrote.
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) {
        unsigned* count = arrivals + (size_t)r * heads + h0;
        last_block = atomicAdd(count, 1u) == (unsigned)parts - 1;
        if (last_block) *count = 0u;
    }
    __syncthreads();
    if (!last_block) return;
    __threadfence();
    // Each part's weight per head, exp(max − top) / total, then the weighted sums.
    float* weights = scores;  // [G][parts]
    if (threadIdx.x < G) {
        const float* all = partials + ((size_t)r * heads + h0 + threadIdx.x) * gridDim.z * stride;
        float top = __int_as_float(0xff800000);
        for (int z = 0; z < parts; z++) top = fmaxf(top, __ldcg(all + z * stride + head_dim));
        float total = 0.0f;
        for (int z = 0; z < parts; z++) {
            const float w = expf(__ldcg(all + z * stride + head_dim) - top);
            weights[threadIdx.x * parts + z] = w;
            total += __ldcg(all + z * stride + head_dim + 1) * w;
        }
        for (int z = 0; z < parts; z++) weights[threadIdx.x * parts + z] /= total;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < gd; i += blockDim.x) {
        const int j = i / head_dim;
        const float* all = partials + ((size_t)r * heads + h0 + j) * gridDim.z * stride;
        float v = 0.0f;
        for (int z = 0; z < parts; z++)
            v += __ldcg(all + z * stride + (i - j * head_dim)) * weights[j * parts + z];
        store_q8(out, o + i, v, half_out, q8, s8);
    }
}

// The kernels the host picks from: G heads per block (a divisor of the group, up to 8, up to 4
// for heads of more than 128 dims), C chunks of 128 dims.
#define PAGED_ATTENTION(G, C)                                                                    \
    extern "C" __global__ void __launch_bounds__(ATT_WARPS * 32) paged_attention_g##G##_c##C(   \
        void* out, const float* q, const unsigned short* k_cache, const unsigned short* v_cache, \
        const unsigned* block_tables, const unsigned* row_seqs, const unsigned* context_lens,   \
        int max_blocks, int block_size, int heads, int kv_heads, int head_dim, float scale,     \
        int window, float softcap, int half_out, signed char* q8, float2* s8, int part,         \
        float* partials, unsigned* arrivals) {                                                   \
        paged_attention<G, C>(out, q, k_cache, v_cache, block_tables, row_seqs, context_lens,  \
                              max_blocks, block_size, heads, kv_heads, head_dim, scale, window, \
                              softcap, half_out, q8, s8, part, partials, arrivals);             \
    }
PAGED_ATTENTION(1, 1)
PAGED_ATTENTION(2, 1)
PAGED_ATTENTION(3, 1)
PAGED_ATTENTION(4, 1)
PAGED_ATTENTION(5, 1)
PAGED_ATTENTION(6, 1)
PAGED_ATTENTION(7, 1)
PAGED_ATTENTION(8, 1)
PAGED_ATTENTION(1, 2)
PAGED_ATTENTION(2, 2)
PAGED_ATTENTION(3, 2)
PAGED_ATTENTION(4, 2)
