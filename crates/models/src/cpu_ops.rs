//! Elementwise steps of a decoder layer fused into one pass each on the CPU (no intermediate
//! tensors), threaded on forja-quant's worker pool: the gated MLP's `act(gate) · up` with
//! vectorizable SiLU and tanh-GELU, and RMSNorm. Inference only: tensors that track gradients
//! go to `crate::grad_ops`, whose ops carry their backward passes.

use candle_core::{CpuStorage, DType, Layout, Storage, Tensor};
use forja_arch::decoder_config::Activation;
use forja_quant::math;

use crate::error::Result;

/// Elements per task; below twice this the call stays on the calling thread.
const CHUNK: usize = 16 * 1024;

/// `f(start, part)` over `out` in parts of whole `unit`-value rows (about [`CHUNK`] values
/// each), on forja-quant's worker pool when `out` is large, else on the calling thread.
pub(crate) fn run_chunks(out: &mut [f32], unit: usize, f: &(dyn Fn(usize, &mut [f32]) + Sync)) {
    if out.len() < 2 * CHUNK {
        f(0, out);
    } else {
        let rows = (CHUNK / unit.max(1)).max(1);
        forja_quant::parallel_chunks_mut(out, rows * unit.max(1), f);
    }
}

/// `act(gate) · up` when both are contiguous f32 CPU tensors of one shape that track no
/// gradient and `act` is SiLU or tanh-GELU; `None` otherwise (the caller uses candle's ops).
pub(crate) fn gated(gate: &Tensor, up: &Tensor, act: Activation) -> Result<Option<Tensor>> {
    if gate.shape() != up.shape() || !fusable(gate) || !fusable(up) {
        return Ok(None);
    }
    let out = {
        let (gs, gl) = gate.storage_and_layout();
        let (us, ul) = up.storage_and_layout();
        let (Some(g), Some(u)) = (cpu_f32(&gs, gl), cpu_f32(&us, ul)) else {
            return Ok(None);
        };
        match gated_values(g, u, act) {
            Some(out) => out,
            None => return Ok(None),
        }
    };
    Ok(Some(Tensor::from_vec(out, gate.shape(), gate.device())?))
}

/// `act(g) · u` over two slices of one length, for SiLU and tanh-GELU (`None` for other
/// activations): the pass inference and the training op's forward share.
pub(crate) fn gated_values(g: &[f32], u: &[f32], act: Activation) -> Option<Vec<f32>> {
    match act {
        Activation::Silu => Some(gated_with(g, u, math::silu)),
        Activation::GeluTanh => Some(gated_with(g, u, math::gelu_tanh)),
        Activation::Gelu | Activation::Relu => None,
    }
}

/// [`gated_values`] for one activation function (a type of its own, so the loop inlines and
/// vectorizes it).
fn gated_with(g: &[f32], u: &[f32], f: impl Fn(f32) -> f32 + Copy + Sync) -> Vec<f32> {
    let mut out = vec![0f32; g.len().min(u.len())];
    let run = |start: usize, part: &mut [f32]| {
        let (g, u) = (&g[start..start + part.len()], &u[start..start + part.len()]);
        for ((o, &g), &u) in part.iter_mut().zip(g).zip(u) {
            *o = f(g) * u;
        }
    };
    run_chunks(&mut out, 1, &run);
    out
}

/// `x / √(mean(x²) + eps) · scale` over the last dimension of a contiguous f32 CPU tensor that
/// tracks no gradient (`scale`: that dimension's f32 values); `None` otherwise.
pub(crate) fn rms_norm(x: &Tensor, scale: &[f32], eps: f64) -> Result<Option<Tensor>> {
    let dim = scale.len();
    if x.dims().last() != Some(&dim) || dim == 0 {
        return Ok(None);
    }
    if !fusable(x) {
        return Ok(None);
    }
    let out = {
        let (xs, xl) = x.storage_and_layout();
        let Some(x) = cpu_f32(&xs, xl) else {
            return Ok(None);
        };
        let mut out = vec![0f32; x.len()];
        // Whole rows per task.
        let run = |start: usize, part: &mut [f32]| {
            for (o, x) in part.chunks_exact_mut(dim).zip(x[start..].chunks_exact(dim)) {
                // Eight partial sums, so the loop vectorizes.
                let mut lanes = [0f32; 8];
                let mut chunks = x.chunks_exact(8);
                for c in &mut chunks {
                    for (l, v) in lanes.iter_mut().zip(c) {
                        *l += v * v;
                    }
                }
                let tail: f32 = chunks.remainder().iter().map(|v| v * v).sum();
                let ms = (lanes.iter().sum::<f32>() + tail) / dim as f32;
                let inv = 1.0 / (f64::from(ms) + eps).sqrt() as f32;
                for ((o, &x), &s) in o.iter_mut().zip(x).zip(scale) {
                    *o = x * inv * s;
                }
            }
        };
        run_chunks(&mut out, dim, &run);
        out
    };
    Ok(Some(Tensor::from_vec(out, x.shape(), x.device())?))
}

/// Whether `t` is an f32 CPU tensor that tracks no gradient (what the fused passes take, if
/// its values are contiguous too).
fn fusable(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32 && !t.track_op()
}

/// A contiguous f32 CPU tensor's values.
pub(crate) fn cpu_f32<'a>(storage: &'a Storage, layout: &Layout) -> Option<&'a [f32]> {
    let (start, end) = layout.contiguous_offsets()?;
    match storage {
        Storage::Cpu(CpuStorage::F32(v)) => v.get(start..end),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code fails loudly")]

    use candle_core::{Device, Tensor, Var};
    use forja_arch::decoder_config::Activation;

    use crate::test_util::max_abs_diff;

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 8.0
            })
            .collect()
    }

    /// The fused passes give candle's results (within f32 rounding), on the calling thread
    /// and split over the pool; tensors they do not cover are left to candle.
    #[test]
    fn fused_ops_match_candles() {
        let dev = Device::Cpu;
        for rows in [3usize, 100] {
            let (g, u) = (random(rows * 640, 1), random(rows * 640, 2));
            let gate = Tensor::from_vec(g, (rows, 640), &dev).unwrap();
            let up = Tensor::from_vec(u, (rows, 640), &dev).unwrap();
            for act in [Activation::Silu, Activation::GeluTanh] {
                let fused = super::gated(&gate, &up, act).unwrap().unwrap();
                let plain = (crate::mlp::activate(&gate, act).unwrap() * &up).unwrap();
                let d = max_abs_diff(&fused, &plain);
                assert!(d < 1e-5, "{act:?} {rows} rows: {d}");
            }
            let scale = random(640, 3);
            let fused = super::rms_norm(&gate, &scale, 1e-6).unwrap().unwrap();
            let s = Tensor::from_vec(scale.clone(), 640, &dev).unwrap();
            let ms = gate.sqr().unwrap().mean_keepdim(1).unwrap();
            let plain = gate
                .broadcast_div(&(ms + 1e-6).unwrap().sqrt().unwrap())
                .unwrap()
                .broadcast_mul(&s)
                .unwrap();
            let d = max_abs_diff(&fused, &plain);
            assert!(d < 1e-5, "rms_norm {rows} rows: {d}");
        }
        // A transposed view, a tensor that tracks gradients, GELU with erf: not fused.
        let x = Tensor::from_vec(random(64, 4), (8, 8), &dev).unwrap();
        let t = x.t().unwrap();
        assert!(super::gated(&t, &t, Activation::Silu).unwrap().is_none());
        assert!(super::rms_norm(&t, &[1.0; 8], 1e-6).unwrap().is_none());
        let v = Var::from_tensor(&x).unwrap();
        assert!(
            super::gated(v.as_tensor(), &x, Activation::Silu)
                .unwrap()
                .is_none()
        );
        assert!(super::gated(&x, &x, Activation::Gelu).unwrap().is_none());
    }
}
