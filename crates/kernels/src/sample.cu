
// Each row's next token chosen on the GPU by the engine's sampler rules (engine/src/sampler.rs):
// over the finite logits, ordered by value with ties to the lower id, keep the top_k best, then
// the shortest prefix whose probability reaches top_p, then those at least min_p times as likely
// as the best; draw one with SplitMix64 at the sequence's generator state. Temperature 0 is
// greedy. No sort: each cut is the element where a running total over that order first reaches
// a target, found by radix passes — first over bins of the tempered logit's distance from the
// best (an eighth wide: logits crowd into few bins of their float bits, and a pass whose
// threads all add to one bin is serialized), then the 32-bit keys 8 bits at a time within the
// chosen bin — and, among equal keys, a pass in id order. Under a top_k or top_p cut the
// row's few leading elements are gathered into shared memory and sorted instead, and every
// cut is an index there (`gather_top`, `cand_pick`): the same token, ~0.2 ms instead of ~0.4
// for a 128k row. Probabilities are summed in fixed point (integers), so every run picks the same
// token.
//
// One block of PICK_THREADS per row. params: PICK_WORDS words a row — temperature (f32 bits),
// top_k (0: off), top_p (f32 bits, 1: off), min_p (f32 bits, 0: off), generator state (low,
// high). out: token | logprob bits << 32; token 0xffffffff when no logit is finite.

#define PICK_THREADS 1024
#define PICK_WORDS 8

typedef unsigned long long u64;

// Larger value, larger key; finite values only.
__device__ __forceinline__ unsigned order_key(float v) {
    const unsigned b = __float_as_uint(v);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

// The value of a key (NaN for keys no finite value has).
__device__ __forceinline__ float key_value(unsigned k) {
    return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}
// The smallest value a cut keeps (−∞ when it keeps everything finite): values below it are
// skipped with one comparison.
__device__ __forceinline__ float cut_floor(unsigned key) {
    return key ? key_value(key) : __int_as_float(0xff800000);
}

// The last element kept: elements come in order of key (descending), then id (ascending).
struct Cut {
    unsigned key, id;
};
__device__ __forceinline__ bool kept(unsigned k, unsigned i, Cut c) {
    return k > c.key || (k == c.key && i <= c.id);
}
// Of two cuts, the one that keeps fewer.
__device__ __forceinline__ Cut tighter(Cut a, Cut b) {
    return (a.key > b.key || (a.key == b.key && a.id < b.id)) ? a : b;
}

__device__ __forceinline__ u64 splitmix(u64 z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// Sum over the block in a fixed order (the same on every run); every thread gets it.
__device__ u64 pick_sum(u64 v, u64* part) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    __syncthreads();
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = v;
    __syncthreads();
    u64 s = 0;
    for (int w = 0; w < PICK_THREADS / 32; ++w) s += part[w];
    return s;
}
__device__ u64 pick_max(u64 v, u64* part) {
    for (int o = 16; o > 0; o >>= 1) {
        const u64 other = __shfl_xor_sync(0xffffffffu, v, o);
        v = other > v ? other : v;
    }
    __syncthreads();
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = v;
    __syncthreads();
    u64 s = 0;
    for (int w = 0; w < PICK_THREADS / 32; ++w) s = part[w] > s ? part[w] : s;
    return s;
}
__device__ float pick_fsum(float v, u64* part) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    __syncthreads();
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = __float_as_uint(v);
    __syncthreads();
    float s = 0.0f;
    for (int w = 0; w < PICK_THREADS / 32; ++w) s += __uint_as_float((unsigned)part[w]);
    return s;
}
// Inclusive prefix sum over the block in thread order.
__device__ u64 pick_scan(u64 v, u64* part) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (int o = 1; o < 32; o <<= 1) {
        const u64 other = __shfl_up_sync(0xffffffffu, v, o);
        if (lane >= o) v += other;
    }
    __syncthreads();
    if (lane == 31) part[warp] = v;
    __syncthreads();
    for (int w = 0; w < warp; ++w) v += part[w];
    return v;
}

// What one row's passes share.
struct Row {
    const float* x;
    int vocab;
    float max, inv;
    // Probabilities in fixed point: 1.0 is 2^scale, so a row's sum stays below 2^63.
    double scale;
};

// Calls f(i, x[i]) for every i < n, the block's threads taking PICK_UNROLL values each per
// round with their loads issued together (one round trip per round, not per value).
#define PICK_UNROLL 8
template <typename F>
__device__ __forceinline__ void each(const float* x, int n, F f) {
    for (int base = threadIdx.x; base < n; base += PICK_UNROLL * PICK_THREADS) {
        float v[PICK_UNROLL];
#pragma unroll
        for (int j = 0; j < PICK_UNROLL; ++j) {
            const int i = base + j * PICK_THREADS;
            v[j] = i < n ? x[i] : 0.0f;
        }
#pragma unroll
        for (int j = 0; j < PICK_UNROLL; ++j) {
            const int i = base + j * PICK_THREADS;
            if (i < n) f(i, v[j]);
        }
    }
}

// The probability the sampler gives a logit (relative to the best: the best has 1), in fixed
// point. The sampler takes forja's polynomial f32 exp of (logit − best) · (1 / temperature);
// CUDA's expf here differs from it by ~1e-7 relative, which moves a pick only when the draw
// falls that close to a boundary.
__device__ __forceinline__ u64 mass(const Row& r, float v) {
    return (u64)rint((double)expf((v - r.max) * r.inv) * r.scale);
}
// The first radix digit: 255 for the best logit, one less per eighth of a tempered unit below
// it (0 from 32 units down). Like the key, it never grows as the logit falls.
__device__ __forceinline__ unsigned near_digit(const Row& r, float v) {
    const float d = (r.max - v) * r.inv * 8.0f;
    return d < 255.0f ? 255u - (unsigned)d : 0u;
}
__device__ __forceinline__ u64 weight(const Row& r, float v, bool by_mass) {
    return by_mass ? mass(r, v) : 1ull;
}
// Whether a running total has reached the target: at or past it, or (strict) past it.
__device__ __forceinline__ bool reached(u64 total, double target, bool strict) {
    const double t = (double)total;
    return strict ? t > target : t >= target;
}

// The first i < n, in thread order a block at a time, whose element (`at(i, w)`: whether i
// counts, and its weight into w) brings `above` plus the running total of the weights to
// `target`; −1 when none does.
template <typename F>
__device__ int first_reaching(int n, F at, u64 above, double target, bool strict, u64* part) {
    for (int base = 0; base < n; base += PICK_THREADS) {
        const int i = base + threadIdx.x;
        u64 w = 0;
        const bool mine = i < n && at(i, w);
        const u64 incl = pick_scan(w, part);
        const u64 chunk = pick_max(incl, part);
        const bool hit = mine && reached(above + incl, target, strict);
        const u64 best = pick_max(hit ? 0xffffffffull - (u64)i : 0ull, part);
        if (best) return (int)(0xffffffffull - best);
        above += chunk;
    }
    return -1;
}

// The element, among those `within` keeps, at which the running total of weights (1 each, or
// the probability) first reaches `target`. The caller guarantees that the whole total does.
// Passes narrow a group (near digit, then key bytes) until it holds one element or one key.
__device__ Cut select(const Row& r, Cut within, bool by_mass, double target, bool strict,
                      u64* hist, unsigned* count, u64* part) {
    // Weights are whole units and every cut keeps the best logit (one unit at least): a target
    // of 0 or less is reached at the first element, which a target of one unit says without
    // letting an empty bin before it reach it.
    if (!strict) target = fmax(target, 1.0);
    __shared__ unsigned found_bin, found_count;
    __shared__ u64 found_above;
    unsigned near = 0, prefix = 0, mask = 0;
    u64 above = 0;
    // The group's values lie in [lo, hi] (widened where rounding could blur the near digit):
    // most values fail this one comparison.
    float lo = cut_floor(within.key), hi = __int_as_float(0x7f800000);
    // Level 0 bins by near_digit; levels 1–4 by the key's bytes, high first.
    for (int level = 0; level < 5; ++level) {
        const int shift = 32 - 8 * level;
        for (int b = threadIdx.x; b < 256; b += PICK_THREADS) {
            hist[b] = 0;
            count[b] = 0;
        }
        __syncthreads();
        each(r.x, r.vocab, [&](int i, float v) {
            if (!(v >= lo && v <= hi) || !isfinite(v)) return;
            const unsigned k = order_key(v);
            if (!kept(k, i, within)) return;
            const unsigned nd = near_digit(r, v);
            unsigned digit = nd;
            if (level > 0) {
                if (nd != near || (k & mask) != prefix) return;
                digit = (k >> shift) & 255;
            }
            atomicAdd(&hist[digit], weight(r, v, by_mass));
            atomicAdd(&count[digit], 1u);
        });
        __syncthreads();
        if (threadIdx.x < 32) {
            // Lane l holds bins 255 - 8l down to 248 - 8l: lanes in order walk the keys down.
            const int lane = threadIdx.x, top = 255 - 8 * lane;
            u64 own = 0;
            for (int j = 0; j < 8; ++j) own += hist[top - j];
            u64 incl = own;
            for (int o = 1; o < 32; o <<= 1) {
                const u64 other = __shfl_up_sync(0xffffffffu, incl, o);
                if (lane >= o) incl += other;
            }
            const unsigned hit = __ballot_sync(0xffffffffu, reached(above + incl, target, strict));
            // The target is reached somewhere; were rounding to say otherwise, the last lane.
            const int first = hit ? __ffs(hit) - 1 : 31;
            if (lane == first) {
                u64 acc = above + incl - own;
                int bin = top - 7;
                for (int j = 0; j < 8; ++j) {
                    if (reached(acc + hist[top - j], target, strict)) {
                        bin = top - j;
                        break;
                    }
                    acc += hist[top - j];
                }
                found_bin = (unsigned)bin;
                found_above = acc;
                found_count = count[bin];
            }
        }
        __syncthreads();
        if (level == 0) {
            near = found_bin;
            const float t = 1.0f / r.inv, top = r.max - (255 - near) * t * 0.125f,
                        margin = t * 0.01f + 1e-5f * (fabsf(r.max) + fabsf(top));
            hi = fminf(hi, top + margin);
            if (near > 0) lo = fmaxf(lo, top - t * 0.125f - margin);
        } else {
            prefix |= found_bin << shift;
            mask |= 255u << shift;
            lo = fmaxf(lo, key_value(prefix));
            hi = fminf(hi, key_value(prefix | ~mask));
        }
        above = found_above;
        const unsigned members = found_count;
        __syncthreads();
        if (members <= 1) break;
    }
    // The group's members in id order: one (its lowest id), or elements of one key.
    const auto member = [&](int i, float v) {
        if (!(v >= lo && v <= hi) || !isfinite(v)) return false;
        const unsigned k = order_key(v);
        return kept(k, i, within) && near_digit(r, v) == near && (k & mask) == prefix;
    };
    u64 n = 0, low = 0;
    each(r.x, r.vocab, [&](int i, float v) {
        if (member(i, v)) {
            ++n;
            low = max(low, 0xffffffffull - (u64)i);
        }
    });
    n = pick_sum(n, part);
    low = pick_max(low, part);
    // (Empty only were rounding to pick an empty bin: then the first id, a valid index.)
    const unsigned low_id = n ? (unsigned)(0xffffffffull - low) : 0u;
    Cut c = {order_key(r.x[low_id]), low_id};
    if (n <= 1) return c;
    const int hit = first_reaching(
        r.vocab,
        [&](int i, u64& w) {
            const float v = r.x[i];
            if (!member(i, v)) return false;
            w = weight(r, v, by_mass);
            return true;
        },
        above, target, strict, part);
    if (hit >= 0) c.id = (unsigned)hit;
    return c;
}

// Sum of the probabilities `within` keeps.
__device__ u64 kept_mass(const Row& r, Cut within, u64* part) {
    u64 s = 0;
    const float lo = cut_floor(within.key);
    each(r.x, r.vocab, [&](int i, float v) {
        if (v >= lo && isfinite(v) && kept(order_key(v), i, within)) s += mass(r, v);
    });
    return pick_sum(s, part);
}

// The fast path of a top_k or top_p cut: the row's few leading elements sorted in shared
// memory, every cut and the draw taken there. Composite keys: the value's key above, the id's
// complement below, so that larger composites come first in (value desc, id asc) order.
#define PICK_CANDIDATES 2048
__device__ __forceinline__ float cand_value(u64 c) { return key_value((unsigned)(c >> 32)); }
__device__ __forceinline__ unsigned cand_id(u64 c) {
    return (unsigned)(0xffffffffull - (c & 0xffffffffull));
}

// What the leading elements must hold: top_k of them (`top_k` > 0), else `top_p` of the
// probability of every finite element (whose sum the gathering pass leaves in `total`).
struct Lead {
    unsigned top_k;
    float top_p;
    u64 total;
};

// Gathers the elements of the lowest near digit (and every digit above it) that hold what
// `lead` asks into `cand`, sorted; returns how many, or 0 when they are not within 32 tempered
// units of the best or outnumber PICK_CANDIDATES (the radix passes then run).
__device__ __noinline__ int gather_top(const Row& r, Lead& lead, u64* cand, unsigned* count,
                                       u64* part) {
    __shared__ unsigned digit_found, members, filled;
    const bool by_mass = lead.top_k == 0;
    for (int b = threadIdx.x; b < 256; b += PICK_THREADS) count[b] = 0;
    __syncthreads();
    u64 own = 0;
    each(r.x, r.vocab, [&](int i, float v) {
        if (!isfinite(v)) return;
        const unsigned d = near_digit(r, v);
        if (by_mass) own += mass(r, v);
        if (d == 0) return;
        // One add per distinct digit of the warp: nearby values share digits.
        const unsigned peers = __match_any_sync(__activemask(), d);
        if ((threadIdx.x & 31) == __ffs(peers) - 1) atomicAdd(&count[d], __popc(peers));
    });
    if (by_mass) lead.total = pick_sum(own, part);
    __syncthreads();
    if (threadIdx.x == 0) {
        // As `select` reaches its target: at least one unit, at or past it.
        const double target = fmax((double)lead.top_p * (double)lead.total, 1.0);
        unsigned total = 0, found = 0;
        double held = 0.0;
        for (unsigned d = 255; d >= 1; --d) {
            total += count[d];
            // At least the probability of the digit's far edge, (256 − d)/8 tempered units
            // below the best, less a margin for the f32 exp and the rounding to whole units:
            // the leading elements then surely hold the target (counting exact sums per digit
            // instead serialized on shared-memory atomics).
            const double low = fmax(r.scale * exp(-(256.0 - d) * 0.125 * (1.0 + 1e-5)) *
                                        (1.0 - 1e-5) - 1.0, 0.0);
            held += count[d] * low;
            if (by_mass ? held >= target : total >= lead.top_k) {
                found = d;
                break;
            }
        }
        digit_found = found;
        members = total;
        filled = 0;
    }
    __syncthreads();
    const unsigned lowest = digit_found;
    const int n = (int)members;
    if (lowest == 0 || n > PICK_CANDIDATES) return 0;
    each(r.x, r.vocab, [&](int i, float v) {
        if (!isfinite(v) || near_digit(r, v) < lowest) return;
        cand[atomicAdd(&filled, 1u)] = ((u64)order_key(v) << 32) | (0xffffffffull - (u64)i);
    });
    int size = 1;
    while (size < n) size <<= 1;
    __syncthreads();
    for (int j = n + threadIdx.x; j < size; j += PICK_THREADS) cand[j] = 0;
    __syncthreads();
    // Bitonic sort, descending.
    for (int k = 2; k <= size; k <<= 1) {
        for (int j = k >> 1; j > 0; j >>= 1) {
            for (int i = threadIdx.x; i < size; i += PICK_THREADS) {
                const int l = i ^ j;
                if (l > i) {
                    const u64 a = cand[i], b = cand[l];
                    if ((i & k) == 0 ? a < b : a > b) {
                        cand[i] = b;
                        cand[l] = a;
                    }
                }
            }
            __syncthreads();
        }
    }
    return n;
}

// Σ of the first n candidates' probabilities.
__device__ u64 cand_mass(const Row& r, const u64* cand, int n, u64* part) {
    u64 s = 0;
    for (int i = threadIdx.x; i < n; i += PICK_THREADS) s += mass(r, cand_value(cand[i]));
    return pick_sum(s, part);
}

// `select` over the first n sorted candidates: the index at which the running total of their
// probabilities first reaches `target`.
__device__ int cand_select(const Row& r, const u64* cand, int n, double target, bool strict,
                           u64* part) {
    if (!strict) target = fmax(target, 1.0);
    const int hit = first_reaching(
        n,
        [&](int i, u64& w) {
            w = mass(r, cand_value(cand[i]));
            return true;
        },
        0ull, target, strict, part);
    // The target is reached somewhere; were rounding to say otherwise, the last.
    return hit >= 0 ? hit : n - 1;
}

// The token `sample_rows` picks from the n sorted candidates `gather_top` left: the same cuts
// in the same order, each an index into them. The top_k cut keeps the first top_k; without
// one every finite element is kept, the candidates first, and each later cut ends within them
// (top_p's by how they were gathered; min_p's then only matters where it ends sooner).
__device__ __noinline__ unsigned cand_pick(const Row& r, const u64* cand, int n,
                                           const Lead& lead, float t, float top_p, float min_p,
                                           u64 state, u64* part) {
    const int keep = lead.top_k > 0 ? (int)lead.top_k : n;
    int end = keep;
    if (top_p < 1.0f) {
        const double total =
            lead.top_k > 0 ? (double)cand_mass(r, cand, keep, part) : (double)lead.total;
        end = min(end, cand_select(r, cand, keep, top_p * total, false, part) + 1);
    }
    if (min_p > 0.0f) {
        // Those at least min_p times as likely as the best: a prefix of the order.
        const float min_log = logf(min_p) - 1e-3f;
        u64 last = 0;
        for (int i = threadIdx.x; i < keep; i += PICK_THREADS) {
            const float d = (cand_value(cand[i]) - r.max) / t;
            if (d >= min_log && exp((double)d) >= (double)min_p) last = max(last, (u64)i + 1);
        }
        end = min(end, (int)pick_max(last, part));
    }
    const u64 sum = cand_mass(r, cand, end, part);
    const double u = (double)(splitmix(state + 0x9E3779B97F4A7C15ull) >> 11) *
                     (1.0 / 9007199254740992.0);
    const double target = fmin(u * (double)sum, nextafter((double)sum, 0.0));
    return cand_id(cand[cand_select(r, cand, end, target, true, part)]);
}

extern "C" __global__ void __launch_bounds__(PICK_THREADS)
    sample_rows(u64* out, const float* logits, const unsigned* params, int vocab) {
    __shared__ u64 hist[256];
    __shared__ unsigned count[256];
    __shared__ u64 part[PICK_THREADS / 32];
    __shared__ u64 cand[PICK_CANDIDATES];
    const unsigned* p = params + (size_t)blockIdx.x * PICK_WORDS;
    const float temperature = __uint_as_float(p[0]), top_p = __uint_as_float(p[2]),
                min_p = __uint_as_float(p[3]);
    const unsigned top_k = p[1];
    const u64 state = (u64)p[4] | ((u64)p[5] << 32);
    Row r;
    r.x = logits + (size_t)blockIdx.x * vocab;
    r.vocab = vocab;
    const bool greedy = temperature == 0.0f;
    const float t = greedy ? 1.0f : temperature, inv = 1.0f / t;
    // One pass: the best logit (lowest id on ties), how many are finite, and each thread's
    // Σ exp((x − m)/t) over its values, m its own running best (log Z, for the log-probability).
    u64 best = 0, finite = 0;
    float m = __int_as_float(0xff800000), z = 0.0f;
    each(r.x, vocab, [&](int i, float v) {
        if (!isfinite(v)) return;
        ++finite;
        const u64 k = ((u64)order_key(v) << 32) | (0xffffffffull - (u64)i);
        best = k > best ? k : best;
        if (v > m) {
            z = z * expf((m - v) * inv) + 1.0f;
            m = v;
        } else {
            z += expf((v - m) * inv);
        }
    });
    best = pick_max(best, part);
    finite = pick_sum(finite, part);
    if (finite == 0) {
        if (threadIdx.x == 0) out[blockIdx.x] = 0xffffffffull;
        return;
    }
    const unsigned best_id = (unsigned)(0xffffffffull - (best & 0xffffffffull));
    const float top = r.x[best_id];
    const float log_z = top + logf(pick_fsum(z * expf((m - top) * inv), part)) * t;
    r.max = top;
    r.inv = inv;
    unsigned token = best_id;
    int fast = 0;
    if (!greedy) {
        int bits = 0;
        while ((1ull << bits) < (u64)vocab) ++bits;
        r.scale = ldexp(1.0, 63 - bits);
        // A top_k or top_p cut keeps few: gather them once (min_p above 1 keeps nothing: the
        // radix path says what that gives).
        const bool by_count = top_k > 0 && (u64)top_k < finite;
        Lead lead = {by_count ? top_k : 0u, top_p, 0ull};
        if ((by_count || top_p < 1.0f) && min_p <= 1.0f)
            fast = gather_top(r, lead, cand, count, part);
        if (fast) token = cand_pick(r, cand, fast, lead, t, top_p, min_p, state, part);
    }
    if (!greedy && !fast) {
        // Everything finite, then the top_k best.
        Cut keep = {0u, 0xffffffffu};
        if (top_k > 0 && (u64)top_k < finite)
            keep = select(r, keep, false, (double)top_k, false, hist, count, part);
        Cut cut = keep;
        if (top_p < 1.0f) {
            const double total = (double)kept_mass(r, keep, part);
            cut = tighter(cut, select(r, keep, true, top_p * total, false, hist, count, part));
        }
        if (min_p > 0.0f) {
            // The last element at least min_p times as likely as the best (always the best
            // itself at least): the smallest such key, its highest id.
            u64 last = 0;
            const float min_log = logf(min_p) - 1e-3f, lo = cut_floor(keep.key);
            each(r.x, vocab, [&](int i, float v) {
                if (!(v >= lo) || !isfinite(v)) return;
                const unsigned k = order_key(v);
                if (!kept(k, i, keep)) return;
                // exp in f64 (the sampler's f32 exp agrees to ~1e-7), for those near enough.
                const float d = (v - top) / t;
                if (d >= min_log && exp((double)d) >= (double)min_p)
                    last = max(last, ((u64)(~k) << 32) | (u64)i);
            });
            last = pick_max(last, part);
            const Cut floor = {~(unsigned)(last >> 32), (unsigned)(last & 0xffffffffull)};
            cut = tighter(cut, floor);
        }
        const u64 sum = kept_mass(r, cut, part);
        const double u = (double)(splitmix(state + 0x9E3779B97F4A7C15ull) >> 11) *
                         (1.0 / 9007199254740992.0);
        // Strictly below the sum, so some element's running total passes it.
        const double target = fmin(u * (double)sum, nextafter((double)sum, 0.0));
        token = select(r, cut, true, target, true, hist, count, part).id;
    }
    if (threadIdx.x == 0) {
        const float logprob = (r.x[token] - log_z) / t;
        out[blockIdx.x] = (u64)token | ((u64)__float_as_uint(logprob) << 32);
    }
}
