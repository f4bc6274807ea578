//! Comparing embedding vectors, and the all-MiniLM-L6-v2 reference vectors
//! (fixtures/goldens/minilm.json, from scripts/goldens/encoders.py).

use serde_json::Value;

/// Largest |a[i] - b[i]|; the lengths must agree.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "vectors of different lengths");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// RMS of `other − reference` over the RMS of `reference` (relative distance of logits).
pub fn rel_rms(reference: &[f32], other: &[f32]) -> f64 {
    assert_eq!(reference.len(), other.len(), "vectors of different lengths");
    let err: f64 = reference
        .iter()
        .zip(other)
        .map(|(a, b)| f64::from(a - b).powi(2))
        .sum();
    let norm: f64 = reference.iter().map(|a| f64::from(*a).powi(2)).sum();
    (err / norm).sqrt()
}

/// Cosine similarity; the lengths must agree.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "vectors of different lengths");
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

/// The MiniLM reference: sentences with their ids and vectors, and a long text cut at 256 tokens.
pub fn minilm_goldens() -> Value {
    let path = crate::fixtures_dir().join("goldens/minilm.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A JSON array of numbers as f32.
pub fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_f64().unwrap_or_else(|| panic!("not a number: {x}")) as f32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_and_distance_of_known_vectors() {
        assert_eq!(max_abs_diff(&[1.0, 2.0], &[1.5, 1.0]), 1.0);
        assert!((cosine(&[1.0, 0.0], &[0.0, 2.0])).abs() < 1e-7);
        assert!((cosine(&[1.0, 1.0], &[2.0, 2.0]) - 1.0).abs() < 1e-6);
    }
}
