//! A binary built with the `cuda` feature on a machine without the NVIDIA driver: opening the
//! GPU is an error that says what is missing, not a crash; and the kernels compile with NVRTC
//! for every GPU generation forja targets (`scripts/test` runs this in CI, with NVRTC from its
//! PyPI package: `scripts/cuda/nvrtc`).

#![cfg(feature = "cuda")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

#[test]
fn opening_a_gpu_without_the_driver_says_what_is_missing() {
    if std::path::Path::new("/proc/driver/nvidia").exists() {
        println!("this machine has the NVIDIA driver: nothing to check here");
        return;
    }
    let e = forja_kernels::cuda::Gpu::open(0).unwrap_err();
    assert!(matches!(e, forja_kernels::KernelError::NoDevice(_)), "{e}");
    assert!(e.to_string().contains("libcuda.so.1"), "{e}");
}

/// NVRTC needs no GPU: every kernel compiles for sm_75 (Turing: the tensor-core tiles compile to
/// a trap there and are never launched), sm_80/86/89 and sm_90, alone and with the tensor-core
/// kernels, and the PTX defines each kernel forja launches. Where NVRTC is missing this says so and passes, except in CI, which installs
/// it.
#[test]
fn the_kernels_compile_for_every_gpu_generation() {
    use forja_kernels::cuda::{compile_kernels, kernel_names};
    for (cap, quantized) in [(7, 5), (8, 0), (8, 6), (8, 9), (9, 0)]
        .into_iter()
        .flat_map(|c| [(c, false), (c, true)])
    {
        let ptx = match compile_kernels(cap, quantized) {
            Err(forja_kernels::KernelError::NoDevice(why)) if std::env::var_os("CI").is_none() => {
                println!("{why}: run scripts/cuda/nvrtc and put its output on LD_LIBRARY_PATH");
                return;
            }
            r => r.unwrap_or_else(|e| panic!("sm_{}{}: {e}", cap.0, cap.1)),
        };
        let src = ptx.to_src();
        assert!(
            src.contains(&format!(".target sm_{}{}", cap.0, cap.1)),
            "sm_{}{}",
            cap.0,
            cap.1
        );
        for name in kernel_names(quantized) {
            assert!(
                src.contains(&format!(".entry {name}(")),
                "sm_{}{}: no kernel {name}",
                cap.0,
                cap.1
            );
        }
        let n = kernel_names(quantized).len();
        let what = if quantized { "with" } else { "without" };
        println!(
            "sm_{}{} {what} the tensor-core kernels: {n} kernels, {} bytes of PTX",
            cap.0,
            cap.1,
            src.len()
        );
    }
}
