//! A binary built with the `cuda` feature on a machine without the NVIDIA driver: opening the
//! GPU is an error that says what is missing, not a crash (`scripts/test` runs this in CI).

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
