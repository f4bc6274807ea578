
// forja's paged attention (kernels.cu's helpers come first in the source NVRTC compiles).

// Attention over the paged cache, one block per (head, query row): row r belongs to sequence
// row_seqs[r] (its row of block_tables) and sees that sequence's first context_lens[r] positions
// (its own position + 1: decode rows see everything, prefill rows are causal), the last `window`
// of them when window > 0. softcap > 0 caps scores as cap·tanh(s / cap). Each warp takes every
// ATT_WARPS-th position, ATT_POS of them at a time (their table entries, then their key or value
// rows, loaded before any is used: a short context costs a few memory round trips, not one per
// position); its lanes take four consecutive dims each (8-byte loads, a row in one coalesced
// access), a shuffle sums the dot product; scores wait in shared memory for the softmax, then
// each warp sums its positions' values over its lanes' dims and the warps' partial sums are
// added, then written as f32 or f16 (and, with q8, also in 8 bits for a quantized product).
// head_dim ≤ 256, a multiple of 4.
// Split-K: a row's positions come in parts of `part`, one block each (grid z). A row of one
// part is written as above; otherwise each block leaves its unnormalized sums, max and
// exponent sum in `partials` (stride head_dim + 2, slot (r·heads + h)·gridDim.z + z), and the
// last of the row's blocks to finish (counted in `arrivals`, which it resets to 0) combines
// them. Blocks past the row's last part return at once.
#define ATT_WARPS 8
#define ATT_POS 4

// The rows of ATT_POS positions t0 + p·ATT_WARPS (past the last: the last again) of one
// kv head in a paged cache, four halves per lane (lanes lane and lane + 32).
__device__ __forceinline__ void att_rows(uint2 (&r)[ATT_POS][2], const unsigned short* cache,
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
        for (int c = 0; c < 2; c++) {
            const int i = lane + 32 * c;
            r[k][c] = i < quads ? ((const uint2*)p[k])[i] : make_uint2(0u, 0u);
        }
}

__device__ __forceinline__ float4 h4(uint2 v) {
    return make_float4(h2f((unsigned short)(v.x & 0xFFFF)), h2f((unsigned short)(v.x >> 16)),
                       h2f((unsigned short)(v.y & 0xFFFF)), h2f((unsigned short)(v.y >> 16)));
}

extern "C" __global__ void paged_attention_f16(
    void* out, const float* q, const unsigned short* k_cache, const unsigned short* v_cache,
    const unsigned* block_tables, const unsigned* row_seqs, const unsigned* context_lens,
    int max_blocks, int block_size, int heads, int kv_heads, int head_dim, float scale,
    int window, float softcap, int half_out, signed char* q8, float2* s8, int part,
    float* partials, unsigned* arrivals) {
    extern __shared__ float shared[];
    __shared__ int last_block;
    const int h = blockIdx.x, r = blockIdx.y;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int ctx = (int)context_lens[r];
    const int visible = ctx - (window > 0 && ctx > window ? ctx - window : 0);
    const int parts = (visible + part - 1) / part;
    if ((int)blockIdx.z >= parts) return;
    const int first = ctx - visible + (int)blockIdx.z * part;
    const int n = min(part, ctx - first);
    const int g = h / (heads / kv_heads);
    const int quads = head_dim / 4;
    const size_t width = (size_t)kv_heads * head_dim, head_off = (size_t)g * head_dim;
    const unsigned* table = block_tables + (size_t)row_seqs[r] * max_blocks;
    float* qs = shared;                          // [head_dim]
    float* partial = shared + head_dim;          // [ATT_WARPS][head_dim]
    float* scores = partial + ATT_WARPS * head_dim;  // [n]
    const float* qh = q + ((size_t)r * heads + h) * head_dim;
    for (int i = threadIdx.x; i < head_dim; i += blockDim.x) qs[i] = qh[i];
    __syncthreads();
    float4 qv[2];
#pragma unroll
    for (int c = 0; c < 2; c++) {
        const int i = lane + 32 * c;
        qv[c] = i < quads ? ((const float4*)qs)[i] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
    float m = __int_as_float(0xff800000);
    for (int t0 = warp; t0 < n; t0 += ATT_WARPS * ATT_POS) {
        uint2 kr[ATT_POS][2];
        att_rows(kr, k_cache, table, block_size, first, t0, n, width, head_off, lane, quads);
#pragma unroll
        for (int k = 0; k < ATT_POS; k++) {
            float d = 0.0f;
#pragma unroll
            for (int c = 0; c < 2; c++) {
                const float4 kf = h4(kr[k][c]);
                d += qv[c].x * kf.x + qv[c].y * kf.y + qv[c].z * kf.z + qv[c].w * kf.w;
            }
            for (int o = 16; o > 0; o >>= 1) d += __shfl_xor_sync(0xffffffffu, d, o);
            d *= scale;
            if (softcap > 0.0f) d = softcap * tanhf(d / softcap);
            const int t = t0 + k * ATT_WARPS;
            if (t < n) {
                if (lane == 0) scores[t] = d;
                m = fmaxf(m, d);
            }
        }
    }
    m = block_reduce(m, true);
    float sum = 0.0f;
    for (int t = threadIdx.x; t < n; t += blockDim.x) {
        const float e = expf(scores[t] - m);
        scores[t] = e;
        sum += e;
    }
    sum = block_reduce(sum, false);
    float4 acc[2];
#pragma unroll
    for (int c = 0; c < 2; c++) acc[c] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    for (int t0 = warp; t0 < n; t0 += ATT_WARPS * ATT_POS) {
        uint2 vr[ATT_POS][2];
        att_rows(vr, v_cache, table, block_size, first, t0, n, width, head_off, lane, quads);
#pragma unroll
        for (int k = 0; k < ATT_POS; k++) {
            const int t = t0 + k * ATT_WARPS;
            const float p = t < n ? scores[t] : 0.0f;
#pragma unroll
            for (int c = 0; c < 2; c++) {
                const float4 vf = h4(vr[k][c]);
                acc[c].x += p * vf.x;
                acc[c].y += p * vf.y;
                acc[c].z += p * vf.z;
                acc[c].w += p * vf.w;
            }
        }
    }
#pragma unroll
    for (int c = 0; c < 2; c++) {
        const int i = lane + 32 * c;
        if (i < quads) ((float4*)(partial + warp * head_dim))[i] = acc[c];
    }
    __syncthreads();
    // The output as the next product reads it (store_q8: with q8, head_dim a multiple of 32, so
    // each warp's lanes hold one block of 32).
    const size_t o = ((size_t)r * heads + h) * head_dim;
    if (parts == 1) {
        for (int i = threadIdx.x; i < head_dim; i += blockDim.x) {
            float v = 0.0f;
            for (int w = 0; w < ATT_WARPS; w++) v += partial[w * head_dim + i];
            store_q8(out, o + i, v / sum, half_out, q8, s8);
        }
        return;
    }
    const size_t stride = head_dim + 2, row_slot = ((size_t)r * heads + h) * gridDim.z;
    float* mine = partials + (row_slot + blockIdx.z) * stride;
    for (int i = threadIdx.x; i < head_dim; i += blockDim.x) {
        float v = 0.0f;
        for (int w = 0; w < ATT_WARPS; w++) v += partial[w * head_dim + i];
        mine[i] = v;
    }
    if (threadIdx.x == 0) {
        mine[head_dim] = m;
        mine[head_dim + 1] = sum;
    }
    // Written before counted; the last block reads what every other one wrote.
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) {
        unsigned* count = arrivals + (size_t)r * heads + h;
        last_block = atomicAdd(count, 1u) == (unsigned)parts - 1;
        if (last_block) *count = 0u;
    }
    __syncthreads();
    if (!last_block) return;
    __threadfence();
    const float* all = partials + row_slot * stride;
    float top = __int_as_float(0xff800000);
    for (int z = 0; z < parts; z++) top = fmaxf(top, __ldcg(all + z * stride + head_dim));
    float total = 0.0f;
    for (int z = 0; z < parts; z++)
        total += __ldcg(all + z * stride + head_dim + 1) *
                 expf(__ldcg(all + z * stride + head_dim) - top);
    for (int i = threadIdx.x; i < head_dim; i += blockDim.x) {
        float v = 0.0f;
        for (int z = 0; z < parts; z++)
            v += __ldcg(all + z * stride + i) * expf(__ldcg(all + z * stride + head_dim) - top);
        store_q8(out, o + i, v / total, half_out, q8, s8);
    }
}
