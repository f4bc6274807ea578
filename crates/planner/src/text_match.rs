//! Name matching for catalog lookups: normalization and "did you mean" suggestions.

/// Lower-case, with `-`, `_`, `:`, `/` and runs of spaces folded to one space; dots are kept, so
/// `llama-3.1-8b` and `Llama 3.1 8B` match but `3.1` and `31` do not.
pub fn normalize(s: &str) -> String {
    let lower = s.trim().to_ascii_lowercase();
    let mut out = String::with_capacity(lower.len());
    for c in lower.chars() {
        let c = if matches!(c, '-' | '_' | ' ' | ':' | '/') {
            ' '
        } else {
            c
        };
        if c == ' ' && out.ends_with(' ') {
            continue;
        }
        out.push(c);
    }
    out.trim().to_string()
}

/// Levenshtein distance over bytes.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, &ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, &cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Up to three candidates close to `query`: containing it, or within a small edit distance.
pub fn suggestions(query: &str, candidates: &[&str]) -> Vec<String> {
    let q = normalize(query);
    let mut scored: Vec<(usize, &str)> = candidates
        .iter()
        .map(|c| {
            let n = normalize(c);
            let d = if n.contains(&q) || q.contains(&n) {
                0
            } else {
                edit_distance(&q, &n)
            };
            (d, *c)
        })
        .filter(|(d, c)| *d <= (c.len() / 3).max(2))
        .collect();
    scored.sort();
    scored
        .into_iter()
        .take(3)
        .map(|(_, c)| c.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_separators() {
        assert_eq!(normalize(" Llama-3.1_8B "), "llama 3.1 8b");
        assert_eq!(normalize("qwen2.5:7b"), "qwen2.5 7b");
    }

    #[test]
    fn suggests_near_misses() {
        let c = [
            "llama-3.1-8b-instruct",
            "llama-3.1-70b-instruct",
            "qwen2.5-7b-instruct",
        ];
        assert_eq!(
            suggestions("lama-3.1-8b-instruct", &c)[0],
            "llama-3.1-8b-instruct"
        );
        assert!(suggestions("zzzzzzzz", &c).is_empty());
    }
}
