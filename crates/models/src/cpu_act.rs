//! The gated MLP's `act(gate) · up` in one pass on the CPU (no intermediate tensor), threaded on
//! forja-quant's worker pool with its vectorizable SiLU and tanh-GELU. Inference only: tensors
//! that track gradients keep candle's ops, whose backward passes training needs.

use candle_core::{CpuStorage, DType, Storage, Tensor};
use forja_arch::decoder_config::Activation;
use forja_quant::math;

use crate::error::Result;

/// Elements per task; below twice this the call stays on the calling thread.
const CHUNK: usize = 16 * 1024;

/// `act(gate) · up` when both are contiguous f32 CPU tensors of one shape that track no
/// gradient and `act` is SiLU or tanh-GELU; `None` otherwise (the caller uses candle's ops).
pub(crate) fn gated(gate: &Tensor, up: &Tensor, act: Activation) -> Result<Option<Tensor>> {
    match act {
        Activation::Silu => gated_with(gate, up, math::silu),
        Activation::GeluTanh => gated_with(gate, up, math::gelu_tanh),
        Activation::Gelu | Activation::Relu => Ok(None),
    }
}

/// [`gated`] for one activation function (a type of its own, so the loop inlines and
/// vectorizes it).
fn gated_with(
    gate: &Tensor,
    up: &Tensor,
    f: impl Fn(f32) -> f32 + Copy + Sync,
) -> Result<Option<Tensor>> {
    if !gate.device().is_cpu()
        || gate.dtype() != DType::F32
        || up.dtype() != DType::F32
        || gate.shape() != up.shape()
        || gate.track_op()
        || up.track_op()
    {
        return Ok(None);
    }
    let out = {
        let (gs, gl) = gate.storage_and_layout();
        let (us, ul) = up.storage_and_layout();
        let (Storage::Cpu(CpuStorage::F32(g)), Storage::Cpu(CpuStorage::F32(u))) = (&*gs, &*us)
        else {
            return Ok(None);
        };
        let (Some((g0, g1)), Some((u0, u1))) = (gl.contiguous_offsets(), ul.contiguous_offsets())
        else {
            return Ok(None);
        };
        let (g, u) = (&g[g0..g1], &u[u0..u1]);
        let mut out = vec![0f32; g.len()];
        let run = |start: usize, part: &mut [f32]| {
            let (g, u) = (&g[start..start + part.len()], &u[start..start + part.len()]);
            for ((o, &g), &u) in part.iter_mut().zip(g).zip(u) {
                *o = f(g) * u;
            }
        };
        if out.len() < 2 * CHUNK {
            run(0, &mut out);
        } else {
            forja_quant::parallel_chunks_mut(&mut out, CHUNK, &run);
        }
        out
    };
    Ok(Some(Tensor::from_vec(out, gate.shape(), gate.device())?))
}
