//! GGUF block-quantized weights on the CPU: the storage formats (`Q4_0` … `Q8_0`, `Q2_K` …
//! `Q6_K`, and F32/F16/BF16 rows), their reference dequantization, the 8-bit activation blocks
//! they multiply with (`Q8_0`, `Q8_1`, `Q8_K`, paired as llama.cpp pairs them), dot products in
//! portable Rust, AVX2, AVX-512 and AVX-512 VNNI (chosen at run time, so one x86-64 binary runs
//! everywhere) and NEON (with the dot-product extension where the CPU has it), and [`QMatrix`], a quantized matrix whose product with f32 activations is
//! threaded over tiles of weight rows on the crate's own worker pool, its blocks kept in the
//! layout its kernels read (`panels`, `grouped`); and the quantizers that write every format
//! (`quantize.rs`), the inverse of the dequantization.
//!
//! Every kernel is checked against the reference (dequantize, then an f32 dot product) by the
//! property tests in `tests/`.

#[macro_use]
mod macros;

pub mod activation;
#[cfg(target_arch = "aarch64")]
mod arm;
pub mod dequant;
pub mod dot;
pub mod error;
mod float;
pub mod format;
mod grouped;
mod kquants;
mod legacy;
pub mod math;
pub mod matrix;
mod panels;
mod pool;
pub mod quantize;
mod quantize_k;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use activation::{ActRow, BlockQ8_0, BlockQ8_1, BlockQ8K, QuantizedActivations};
pub use dequant::{dequantize, dequantize_row};
pub use dot::{Isa, vec_dot};
pub use error::{QuantError, Result};
pub use format::{ActivationType, QK, QK_K, QuantType};
pub use matrix::QMatrix;
pub use quantize::{quantize, quantize_row};

/// Calls `f(0) … f(tasks - 1)` on the worker pool the matmuls use (the caller works too) and
/// returns when every call has returned, so other CPU kernels (attention over the KV cache) share
/// its threads instead of competing with a second pool. A panic in a task is raised here.
pub fn parallel_for(tasks: usize, f: &(dyn Fn(usize) + Sync)) {
    pool::Pool::global().run(tasks, f);
}

/// Threads [`parallel_for`] spreads work over, the caller included.
pub fn parallel_threads() -> usize {
    pool::Pool::global().threads()
}

/// Calls `f(start, part)` for consecutive parts of `data`, `chunk` elements each (the last may
/// be shorter; `start` is the part's first index), on the worker pool; returns when all have.
pub fn parallel_chunks_mut<T: Send>(
    data: &mut [T],
    chunk: usize,
    f: &(dyn Fn(usize, &mut [T]) + Sync),
) {
    let chunk = chunk.max(1);
    let len = data.len();
    let parts: Vec<matrix::SharedMut<T>> =
        data.chunks_mut(chunk).map(matrix::SharedMut::of).collect();
    pool::Pool::global().run(parts.len(), &|t| {
        let start = t * chunk;
        // SAFETY: part `t` is elements `start .. min(start + chunk, len)` of `data`, which
        // outlives `run`; each task takes its own part.
        let part = unsafe { std::slice::from_raw_parts_mut(parts[t].0, chunk.min(len - start)) };
        f(start, part);
    });
}

/// `n` pseudo-random bytes (xorshift64 from `seed`, which must not be 0), for the unit tests.
#[cfg(test)]
pub(crate) fn test_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
