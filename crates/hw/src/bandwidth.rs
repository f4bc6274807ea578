//! A short memory-bandwidth measurement: every thread copies its share of a buffer much larger
//! than the caches, and the best of a few rounds counts (read + write bytes per second).

/// Measured copy bandwidth in GB/s, or `None` if buffers could not be allocated.
pub fn measure_copy_bandwidth_gbps(buffer_bytes: usize, rounds: u32) -> Option<f64> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let len = buffer_bytes / 8 / threads * threads;
    if len == 0 {
        return None;
    }
    let src: Vec<u64> = (0..len as u64).collect();
    let mut dst = vec![0u64; len];
    let chunk = len / threads;
    let mut best = f64::INFINITY;
    for _ in 0..rounds.max(1) {
        let start = std::time::Instant::now();
        std::thread::scope(|s| {
            for (d, src) in dst.chunks_mut(chunk).zip(src.chunks(chunk)) {
                s.spawn(move || d.copy_from_slice(src));
            }
        });
        best = best.min(start.elapsed().as_secs_f64());
    }
    std::hint::black_box(&dst);
    // A copy reads and writes every byte once.
    Some(2.0 * (len * 8) as f64 / best / 1e9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_and_reports_a_positive_rate() {
        let gbps = measure_copy_bandwidth_gbps(16 << 20, 2).unwrap();
        assert!(gbps > 0.0 && gbps.is_finite());
    }
}
