
// ---- GGUF block-quantized weights over several activation rows, on the tensor cores ---------
// (Appended to kernels.cu at compile time; uses its helpers.) The activations are quantized to
// 8 bits per block of 32 (quantize_q8: values, then (d, d·Σq) per block); the weight's values
// become 8-bit integers in registers, and mma.sync sums 16 weight rows × 8 activation rows of
// a block at a time in int32 (m16n8k32; Q6_K and Q3_K, whose scales change every 16 values,
// in two m16n8k16). Each block's integer sums are then scaled in f32:
//   y += d_w · d_x · Σ q_w q_x − m_w · (d_x Σ q_x)
// with m_w the weight block's offset per unit of activation (Q4_0: 8 d, Q5_0: 16 d, Q4_1 /
// Q5_1: −m, Q4_K / Q5_K: dmin · min, Q8_0 / Q6_K: none). Needs sm_80 (Gpu::mmq_available);
// older GPUs use the GEMV.
//
// Fragments (PTX ISA, lane = 4 g + t): A a[0] = row g, k 4t..4t+3; a[1] = row g+8, same k;
// a[2] = row g, k 16+4t..; a[3] = row g+8, k 16+4t..; B b[0] = k 4t.., column g; b[1] =
// k 16+4t.., column g; C c[0], c[1] = row g, columns 2t, 2t+1; c[2], c[3] = row g+8. The k of
// a block are its values in order, so each lane reads 4-byte words at 4t and 16+4t of a block's
// 32 values (and the same words of the activation block).

#if __CUDA_ARCH__ >= 800
#define MMQ_ARCH 1
#else
#define MMQ_ARCH 0
#endif

__device__ __forceinline__ void mma_k32(int (&c)[4], const unsigned (&a)[4], unsigned b0,
                                        unsigned b1) {
#if MMQ_ARCH
    asm("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%10,%10,%10,%10};"
        : "=r"(c[0]), "=r"(c[1]), "=r"(c[2]), "=r"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1), "r"(0));
#else
    __trap();
#endif
}

__device__ __forceinline__ void mma_k16(int (&c)[4], unsigned a0, unsigned a1, unsigned b0) {
#if MMQ_ARCH
    asm("mma.sync.aligned.m16n8k16.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5}, {%6}, "
        "{%7,%7,%7,%7};"
        : "=r"(c[0]), "=r"(c[1]), "=r"(c[2]), "=r"(c[3])
        : "r"(a0), "r"(a1), "r"(b0), "r"(0));
#else
    __trap();
#endif
}

__device__ __forceinline__ unsigned word_at(const unsigned char* p) {
    return *(const unsigned*)p;
}

// A block of the kernel stages each run of 256 values (a K-quant super-block, eight blocks of
// the others) in shared memory: for each of its 64 weight rows the run's bytes of every area
// of the device layout (quant.rs) as 16-byte units, and for each activation row the run's 256
// values and 8 block scales. Units per weight row of a run, and the byte offset in the row of
// unit u of run c (nb: the row's blocks, super-blocks for K-quants):
//   Q8_0 17: qs c·256 + 16u (u < 16), d nb·32 + c·16
//   Q4_0  9: qs c·128 + 16u (u < 8), d nb·16 + c·16
//   Q4_1 10: qs c·128 + 16u (u < 8), (d, m) nb·16 + c·32 + 16(u − 8)
//   Q5_0 11: qs c·128 + 16u (u < 8), qh q5_qh + c·32 + 16(u − 8) (u < 10), d q5_sc + c·16
//   Q5_1 12: qs, qh as Q5_0, (d, m) q5_sc + c·32 + 16(u − 10)
//   Q4_K  9: qs c·128 + 16u (u < 8), (d, dmin, scales) nb·128 + c·16
//   Q5_K 11: as Q4_K, then qh nb·144 + c·32 + 16(u − 9)
//   Q2_K  6: qs c·64 + 16u (u < 4), scales nb·64 + c·16, and the 16 bytes holding (d, dmin)
//            (nb·80 + c·4, rounded down to 16)
//   Q3_K  7: qs c·64 + 16u (u < 4), hmask nb·64 + c·32 + 16(u − 4) (u < 6), (scales, d)
//            nb·96 + c·16
//   Q6_K 14: ql c·128 + 16u (u < 8), qh nb·128 + c·64 + 16(u − 8) (u < 12), scales nb·192 +
//            c·16, and the 16 bytes holding d (nb·208 + c·2, rounded down to 16)
// Past the row's last block a run reads bytes it does not use (upload_quant pads the buffer).
template <int TY>
struct Run {
    static constexpr int UNITS = TY == 0   ? 17
                                 : TY == 1 ? 9
                                 : TY == 2 ? 10
                                 : TY == 3 ? 9
                                 : TY == 4 ? 14
                                 : TY == 6 ? 12
                                 : TY == 8 ? 7
                                 : TY == 9 ? 6
                                           : 11;
    // Row stride in shared memory, in 16-byte units: odd, so that the 8 rows a fragment load
    // touches fall in different banks.
    static constexpr int STRIDE = UNITS | 1;
};

template <int TY>
__device__ __forceinline__ size_t unit_offset(int u, int nb, int c) {
    if (TY == 0) return u < 16 ? (size_t)c * 256 + 16 * u : (size_t)nb * 32 + c * 16;
    if (TY == 1) return u < 8 ? (size_t)c * 128 + 16 * u : (size_t)nb * 16 + c * 16;
    if (TY == 2) return u < 8 ? (size_t)c * 128 + 16 * u : (size_t)nb * 16 + c * 32 + 16 * (u - 8);
    if (TY == 3) return u < 8 ? (size_t)c * 128 + 16 * u : (size_t)nb * 128 + c * 16;
    if (TY == 5 || TY == 6) {
        if (u < 8) return (size_t)c * 128 + 16 * u;
        if (u < 10) return q5_qh(nb) + c * 32 + 16 * (u - 8);
        return q5_sc(nb) + (size_t)c * (TY == 5 ? 16 : 32) + 16 * (u - 10);
    }
    if (TY == 9) {
        if (u < 4) return (size_t)c * 64 + 16 * u;
        if (u == 4) return (size_t)nb * 64 + c * 16;
        return ((size_t)nb * 80 + c * 4) & ~(size_t)15;
    }
    if (TY == 8) {
        if (u < 4) return (size_t)c * 64 + 16 * u;
        if (u < 6) return (size_t)nb * 64 + c * 32 + 16 * (u - 4);
        return (size_t)nb * 96 + c * 16;
    }
    if (TY == 7) {
        if (u < 8) return (size_t)c * 128 + 16 * u;
        if (u == 8) return (size_t)nb * 128 + c * 16;
        return (size_t)nb * 144 + c * 32 + 16 * (u - 9);
    }
    if (u < 8) return (size_t)c * 128 + 16 * u;
    if (u < 12) return (size_t)nb * 128 + c * 64 + 16 * (u - 8);
    if (u == 12) return (size_t)nb * 192 + c * 16;
    return ((size_t)nb * 208 + c * 2) & ~(size_t)15;
}

// Weight row s (its run in shared memory), block i (0..7) of the run, lane t: the values
// 4t..4t+3 (lo) and 16+4t.. (hi) as signed bytes, the scales of the block's first and second 16
// values, and the offset per unit of activation sum. d6: where Q6_K's d sits in its unit.
struct RowFrag {
    unsigned lo, hi;
    float d0, d1, m;
    float m1;  // Q2_K: the second 16 values' min (m is the first's)
};

template <int TY>
__device__ __forceinline__ RowFrag row_frag(const unsigned char* s, int i, int t, int d6) {
    const unsigned m4 = 0x0F0F0F0Fu;
    RowFrag f;
    f.m = 0.0f;
    if (TY == 0) {
        f.lo = word_at(s + i * 32 + 4 * t);
        f.hi = word_at(s + i * 32 + 16 + 4 * t);
        f.d0 = h2f_at(s + 256 + i * 2);
    } else if (TY == 1 || TY == 2) {
        // Byte l of a block: value l (low nibble) and value 16 + l (high).
        const unsigned w = word_at(s + i * 16 + 4 * t);
        f.lo = w & m4;
        f.hi = (w >> 4) & m4;
        const unsigned char* sc = s + 128 + i * (TY == 1 ? 2 : 4);
        f.d0 = h2f_at(sc);
        f.m = TY == 1 ? 8.0f * f.d0 : -h2f_at(sc + 2);
    } else if (TY == 5 || TY == 6) {
        // As Q4_0 / Q4_1, with bit l of the block's qh as 16 on value l.
        const unsigned w = word_at(s + i * 16 + 4 * t), qh = word_at(s + 128 + i * 4);
        f.lo = (w & m4) | (spread4(qh >> (4 * t)) << 4);
        f.hi = ((w >> 4) & m4) | (spread4(qh >> (16 + 4 * t)) << 4);
        const unsigned char* sc = s + 160 + i * (TY == 5 ? 2 : 4);
        f.d0 = h2f_at(sc);
        f.m = TY == 5 ? 16.0f * f.d0 : -h2f_at(sc + 2);
    } else if (TY == 9) {
        // As Q3_K without the high bit; each 16 values' scale and min from one byte.
        const int n = i / 4, j = i % 4;
        f.lo = (word_at(s + n * 32 + 4 * t) >> (2 * j)) & 0x03030303u;
        f.hi = (word_at(s + n * 32 + 16 + 4 * t) >> (2 * j)) & 0x03030303u;
        const int sc0 = s[64 + n * 8 + 2 * j], sc1 = s[64 + n * 8 + 2 * j + 1];
        const float d = h2f_at(s + 80 + d6), dmin = h2f_at(s + 82 + d6);
        f.d0 = d * (float)(sc0 & 0xF);
        f.d1 = d * (float)(sc1 & 0xF);
        f.m = dmin * (float)(sc0 >> 4);
        f.m1 = dmin * (float)(sc1 >> 4);
    } else if (TY == 8) {
        // Block i: half n = i / 4, bits 2j (j = i % 4) of the half's 32 qs bytes and bit
        // 4n + j of the 32 hmask bytes; sub-blocks 8n + 2j and 8n + 2j + 1.
        const int n = i / 4, j = i % 4;
        f.lo = three_bits1(word_at(s + n * 32 + 4 * t), word_at(s + 64 + 4 * t), 2 * j, 4 * n + j);
        f.hi = three_bits1(word_at(s + n * 32 + 16 + 4 * t), word_at(s + 80 + 4 * t), 2 * j,
                           4 * n + j);
        const float d = h2f_at(s + 108);
        f.d0 = d * (float)k3_scale(s + 96, n * 8 + 2 * j);
        f.d1 = d * (float)k3_scale(s + 96, n * 8 + 2 * j + 1);
    } else if (TY == 3 || TY == 7) {
        // Sub-block i: nibble i % 2 of the 32 bytes of pair i / 2 (Q5_K: and bit i of qh[l]
        // as 16, qh after the scales' unit).
        const int shift = 4 * (i % 2);
        const unsigned char* q = s + (i / 2) * 32 + 4 * t;
        f.lo = (word_at(q) >> shift) & m4;
        f.hi = (word_at(q + 16) >> shift) & m4;
        if (TY == 7) {
            f.lo |= ((word_at(s + 144 + 4 * t) >> i) & 0x01010101u) << 4;
            f.hi |= ((word_at(s + 160 + 4 * t) >> i) & 0x01010101u) << 4;
        }
        const uint4 hd = *(const uint4*)(s + 128);
        int sc, mn;
        k4_scale_min(hd, i, &sc, &mn);
        f.d0 = h2f((unsigned short)(hd.x & 0xFFFF)) * (float)sc;
        f.m = h2f((unsigned short)(hd.x >> 16)) * (float)mn;
    } else {
        // Block i: half n = i / 4, group g = i % 4 (see decode8).
        const int n = i / 4, g = i % 4;
        const unsigned char* ql = s + n * 64 + (g & 1) * 32 + 4 * t;
        const unsigned char* qh = s + 128 + n * 32 + 4 * t;
        f.lo = six_bits1(word_at(ql), word_at(qh), 4 * (g / 2), 2 * g);
        f.hi = six_bits1(word_at(ql + 16), word_at(qh + 16), 4 * (g / 2), 2 * g);
        const signed char* sc = (const signed char*)(s + 192 + n * 8);
        const float d = h2f_at(s + 208 + d6);
        f.d0 = d * (float)sc[2 * g];
        f.d1 = d * (float)sc[2 * g + 1];
    }
    if (TY != 4 && TY < 8) f.d1 = f.d0;
    return f;
}

// Activation rows in shared memory: a run's 256 values, then its 8 blocks' (d, d·Σq), 336
// bytes a row (84 words: the 8 rows of a fragment load fall in different banks).
constexpr int MMQ_XROW = 336;

// A thread's share (thread tid of 128) of copying run c to shared memory: weight unit tid +
// 128·i of the block's 64 rows, activation unit tid + 128·i of its 8·NT rows (16 a row), block
// scale tid + 128·i (8 a row). Activation values past the row's last block are zeros. The next
// run's weights are loaded while this one is multiplied; its activations too when the tile is
// narrow (PREFETCH_X; wider ones would need more registers than a thread has to spare).
template <int TY, int NT>
struct RunCopy {
    static constexpr int U = Run<TY>::UNITS, WU = (64 * U + 127) / 128, XU = NT,
                         SV = (64 * NT + 127) / 128;
    static constexpr bool PREFETCH_X = NT <= 2;
    uint4 wv[WU], xv[XU];
    float2 sv[SV];

    __device__ __forceinline__ void load_w(const unsigned char* w, int c, int o0, int out,
                                           int stride, int nb) {
        const int tid = threadIdx.x;
#pragma unroll
        for (int i = 0; i < WU; i++) {
            const int u = min(tid + 128 * i, 64 * U - 1), r = u / U, k = u % U;
            const unsigned char* src = w + (size_t)min(o0 + r, out - 1) * stride;
            wv[i] = *(const uint4*)(src + unit_offset<TY>(k, nb, c));
        }
    }

    __device__ __forceinline__ void load_x(const signed char* xq, const float2* xs, int c,
                                           int blocks, int in, int row0, int n0, int rows) {
        const int tid = threadIdx.x;
#pragma unroll
        for (int i = 0; i < XU; i++) {
            const int u = tid + 128 * i, r = u / 16, k = u % 16;
            const int x = row0 + min(n0 + r, rows - 1);
            xv[i] = c * 8 + k / 2 < blocks
                        ? *(const uint4*)(xq + (size_t)x * in + c * 256 + 16 * k)
                        : make_uint4(0, 0, 0, 0);
        }
#pragma unroll
        for (int i = 0; i < SV; i++) {
            const int u = min(tid + 128 * i, 64 * NT - 1), r = u / 8, b = u % 8;
            const int x = row0 + min(n0 + r, rows - 1);
            sv[i] = c * 8 + b < blocks ? xs[(size_t)x * blocks + c * 8 + b]
                                       : make_float2(0.0f, 0.0f);
        }
    }

    __device__ __forceinline__ void store(uint4* sw, uint4* sx) const {
        const int tid = threadIdx.x;
#pragma unroll
        for (int i = 0; i < WU; i++) {
            const int u = tid + 128 * i;
            if (u < 64 * U) sw[(u / U) * Run<TY>::STRIDE + u % U] = wv[i];
        }
#pragma unroll
        for (int i = 0; i < XU; i++) {
            const int u = tid + 128 * i;
            sx[(u / 16) * (MMQ_XROW / 16) + u % 16] = xv[i];
        }
#pragma unroll
        for (int i = 0; i < SV; i++) {
            const int u = tid + 128 * i;
            if (u < 64 * NT) ((float2*)((unsigned char*)sx + (u / 8) * MMQ_XROW + 256))[u % 8] = sv[i];
        }
    }
};

// y[r, y_col + o] = Σ_k x[r, k] · w[o, k] (+ beta · y[r, y_col + o]) for activation rows
// row0 ≤ r < row0 + rows and weight rows o < out. A block (four warps) computes 64 weight rows
// (16 a warp) × 8·NT activation rows, one run of 256 values at a time: the block copies the
// run's weight bytes and activations to shared memory with 16-byte loads, then each warp
// multiplies its rows from there. Weight rows past `out` and activation rows past `rows` read
// the last one again and store nothing. With gridDim.z = S > 1 the runs are split in S parts:
// part z goes to y + z · rows · ldy (partial sums for mmq_sum, beta 0).
template <int TY, int NT>
__device__ void mmq(float* y, const unsigned char* w, const signed char* xq, const float2* xs,
                    int rows, int out, int in, int stride, float beta, int ldy, int y_col,
                    int row0) {
    constexpr int U = Run<TY>::UNITS, SU = Run<TY>::STRIDE, TN = 8 * NT;
    __shared__ uint4 sw[64 * SU];
    __shared__ uint4 sx[TN * MMQ_XROW / 16];
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
    const int o0 = blockIdx.y * 64, n0 = blockIdx.x * TN;
    const int nb = in / block_values(TY), blocks = in / 32, runs = (blocks + 7) / 8;
    float acc[NT][4];
#pragma unroll
    for (int j = 0; j < NT; j++)
#pragma unroll
        for (int i = 0; i < 4; i++) acc[j][i] = 0.0f;
    y += (size_t)blockIdx.z * rows * ldy;
    const int c0 = (int)((long long)runs * blockIdx.z / gridDim.z);
    const int c_end = (int)((long long)runs * (blockIdx.z + 1) / gridDim.z);
    // Each thread's share of a run's copy, loaded into registers all at once (and the next
    // run's while this one is multiplied), then stored to shared memory.
    using Copy = RunCopy<TY, NT>;
    Copy copy;
    if (c0 < c_end) {
        copy.load_w(w, c0, o0, out, stride, nb);
        if (Copy::PREFETCH_X) copy.load_x(xq, xs, c0, blocks, in, row0, n0, rows);
    }
    for (int c = c0; c < c_end; c++) {
        if (!Copy::PREFETCH_X) copy.load_x(xq, xs, c, blocks, in, row0, n0, rows);
        copy.store(sw, sx);
        __syncthreads();
        if (c + 1 < c_end) {
            copy.load_w(w, c + 1, o0, out, stride, nb);
            if (Copy::PREFETCH_X) copy.load_x(xq, xs, c + 1, blocks, in, row0, n0, rows);
        }
        const unsigned char* s0 = (const unsigned char*)(sw + (16 * warp + g) * SU);
        const unsigned char* s1 = s0 + 8 * SU * 16;
        const unsigned char* xb = (const unsigned char*)sx;
        // Where Q6_K's d (Q2_K's d, dmin) sits in the unit holding it.
        const int d6 = TY == 9 ? (int)(((size_t)nb * 80 + c * 4) & 15)
                               : (int)(((size_t)nb * 208 + c * 2) & 15);
#pragma unroll
        for (int i = 0; i < 8; i++) {
            if (c * 8 + i >= blocks) break;
            const RowFrag f0 = row_frag<TY>(s0, i, t, d6), f1 = row_frag<TY>(s1, i, t, d6);
            const unsigned a[4] = {f0.lo, f1.lo, f0.hi, f1.hi};
#pragma unroll
            for (int j = 0; j < NT; j++) {
                const unsigned char* xv = xb + (8 * j + g) * MMQ_XROW + i * 32 + 4 * t;
                const unsigned b0 = word_at(xv), b1 = word_at(xv + 16);
                const float2 x0 = *(const float2*)(xb + (8 * j + 2 * t) * MMQ_XROW + 256 + i * 8);
                const float2 x1 = *(const float2*)(xb + (8 * j + 2 * t + 1) * MMQ_XROW + 256 +
                                                   i * 8);
                if (TY == 9) {
                    // Each 16 values' activation sum from the same product with all-ones
                    // weights: the min's share.
                    const unsigned one = 0x01010101u;
                    int p[4], q[4], e[4], h[4];
                    mma_k16(p, a[0], a[1], b0);
                    mma_k16(q, a[2], a[3], b1);
                    mma_k16(e, one, one, b0);
                    mma_k16(h, one, one, b1);
                    acc[j][0] += x0.x * (f0.d0 * (float)p[0] + f0.d1 * (float)q[0] -
                                         f0.m * (float)e[0] - f0.m1 * (float)h[0]);
                    acc[j][1] += x1.x * (f0.d0 * (float)p[1] + f0.d1 * (float)q[1] -
                                         f0.m * (float)e[1] - f0.m1 * (float)h[1]);
                    acc[j][2] += x0.x * (f1.d0 * (float)p[2] + f1.d1 * (float)q[2] -
                                         f1.m * (float)e[2] - f1.m1 * (float)h[2]);
                    acc[j][3] += x1.x * (f1.d0 * (float)p[3] + f1.d1 * (float)q[3] -
                                         f1.m * (float)e[3] - f1.m1 * (float)h[3]);
                } else if (TY == 4 || TY == 8) {
                    int p[4], q[4];
                    mma_k16(p, a[0], a[1], b0);
                    mma_k16(q, a[2], a[3], b1);
                    acc[j][0] += x0.x * (f0.d0 * (float)p[0] + f0.d1 * (float)q[0]);
                    acc[j][1] += x1.x * (f0.d0 * (float)p[1] + f0.d1 * (float)q[1]);
                    acc[j][2] += x0.x * (f1.d0 * (float)p[2] + f1.d1 * (float)q[2]);
                    acc[j][3] += x1.x * (f1.d0 * (float)p[3] + f1.d1 * (float)q[3]);
                } else {
                    int p[4];
                    mma_k32(p, a, b0, b1);
                    acc[j][0] += f0.d0 * x0.x * (float)p[0] - f0.m * x0.y;
                    acc[j][1] += f0.d0 * x1.x * (float)p[1] - f0.m * x1.y;
                    acc[j][2] += f1.d0 * x0.x * (float)p[2] - f1.m * x0.y;
                    acc[j][3] += f1.d0 * x1.x * (float)p[3] - f1.m * x1.y;
                }
            }
        }
        __syncthreads();
    }
#pragma unroll
    for (int j = 0; j < NT; j++) {
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int o = o0 + 16 * warp + g + (i >= 2 ? 8 : 0), r = n0 + 8 * j + 2 * t + (i & 1);
            if (o < out && r < rows) {
                float* dst = y + (size_t)(row0 + r) * ldy + y_col + o;
                *dst = acc[j][i] + (beta != 0.0f ? beta * *dst : 0.0f);
            }
        }
    }
}

// One kernel per type and tile width (8·NT activation rows a block); 128 threads a block, grid
// (activation row tiles, weight rows / 64). QuantKind::mmq_kernel (quant.rs) names them.
#define MMQ_KERNEL(NAME, TY, NT)                                                             \
    extern "C" __global__ void __launch_bounds__(128)                                      \
        NAME(float* y, const unsigned char* w, const signed char* xq, const float2* xs,    \
             int rows, int out, int in, int stride, float beta, int ldy, int y_col,        \
             int row0) {                                                                   \
        mmq<TY, NT>(y, w, xq, xs, rows, out, in, stride, beta, ldy, y_col, row0);          \
    }
#define MMQ_KERNELS(NAME, TY)        \
    MMQ_KERNEL(NAME##_1, TY, 1)      \
    MMQ_KERNEL(NAME##_2, TY, 2)      \
    MMQ_KERNEL(NAME##_4, TY, 4)      \
    MMQ_KERNEL(NAME##_8, TY, 8)
MMQ_KERNELS(mmq_q8_0, 0)
MMQ_KERNELS(mmq_q4_0, 1)
MMQ_KERNELS(mmq_q4_1, 2)
MMQ_KERNELS(mmq_q4_k, 3)
MMQ_KERNELS(mmq_q5_0, 5)
MMQ_KERNELS(mmq_q5_1, 6)
MMQ_KERNELS(mmq_q5_k, 7)
MMQ_KERNELS(mmq_q3_k, 8)
MMQ_KERNELS(mmq_q2_k, 9)
MMQ_KERNELS(mmq_q6_k, 4)

// y[row0 + r, y_col + o] = Σ_z part[z, r, o] (+ beta · y[..]): the S partial products of a
// split mmq (parts [rows, out] one after another), added in order. One thread per output.
extern "C" __global__ void mmq_sum(float* y, const float* part, int splits, int rows, int out,
                                   float beta, int ldy, int y_col, int row0) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= rows * out) return;
    float s = 0.0f;
    for (int z = 0; z < splits; z++) s += part[(size_t)z * rows * out + i];
    float* dst = y + (size_t)(row0 + i / out) * ldy + y_col + i % out;
    *dst = s + (beta != 0.0f ? beta * *dst : 0.0f);
}
