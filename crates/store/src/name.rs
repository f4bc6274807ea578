//! Hub model names: `hf:org/repo` (safetensors, or a GGUF repo's Q4_K_M), `hf:org/repo:q4_k_m`
//! (the GGUF of that quant), `hf:org/repo:FILE.gguf`, each optionally with `@revision` after the
//! repository. `hf.co/org/repo` and `huggingface.co/org/repo` (Ollama's spelling) work too.

use crate::error::StoreError;

/// Which files of a repository make the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// The safetensors files with their configs and tokenizer; in a GGUF-only repository, the
    /// Q4_K_M file (or the only GGUF).
    Default,
    /// One GGUF file by path (all parts when it is `…-00001-of-0000N.gguf`).
    File(String),
    /// The GGUF of this quantization (`q4_k_m`, `q8_0`, `f16`, …), lower-case.
    Quant(String),
}

/// A model on the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubRef {
    /// `org/repo`, as the hub spells it.
    pub repo: String,
    /// Branch, tag or commit (`main` unless given).
    pub revision: String,
    pub selector: Selector,
}

/// Whether `s` names a GGUF quantization (`q4_k_m`, `iq4_xs`, `q8_0`, `f16`, `bf16`, `f32`).
pub fn is_quant_name(s: &str) -> bool {
    let s = s.to_ascii_lowercase();
    if matches!(s.as_str(), "f16" | "bf16" | "f32") {
        return true;
    }
    let rest = s.strip_prefix('i').unwrap_or(&s);
    let mut chars = rest.chars();
    chars.next() == Some('q')
        && chars.next().is_some_and(|c| c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn valid_repo_part(p: &str) -> bool {
    !p.is_empty()
        && p != "."
        && p != ".."
        && p.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl HubRef {
    /// Parses a hub name; `Ok(None)` when `s` is not one (no `hf:` / `hf.co/` prefix).
    pub fn parse(s: &str) -> Result<Option<HubRef>, StoreError> {
        let t = s.trim();
        let Some(rest) = [
            "hf:",
            "hf.co/",
            "huggingface.co/",
            "https://huggingface.co/",
        ]
        .iter()
        .find_map(|p| t.strip_prefix(p)) else {
            return Ok(None);
        };
        let bad = |why: &str| StoreError::BadName {
            given: s.to_string(),
            why: why.to_string(),
        };
        let (repo_part, selector) = match rest.split_once(':') {
            Some((r, sel)) => (r, Some(sel)),
            None => (rest, None),
        };
        let (repo, revision) = match repo_part.split_once('@') {
            Some((r, rev)) if !rev.is_empty() => (r, rev.to_string()),
            Some(_) => return Err(bad("empty revision after `@`")),
            None => (repo_part, "main".to_string()),
        };
        let parts: Vec<&str> = repo.split('/').collect();
        if parts.len() != 2 || !parts.iter().all(|p| valid_repo_part(p)) {
            return Err(bad(
                "expected hf:org/repo, hf:org/repo:q4_k_m or hf:org/repo:FILE.gguf",
            ));
        }
        let selector = match selector.map(str::trim) {
            None | Some("") | Some("latest") => Selector::Default,
            Some(f) if f.to_ascii_lowercase().ends_with(".gguf") => {
                if f.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
                    return Err(bad("the file name must be a path inside the repository"));
                }
                Selector::File(f.to_string())
            }
            Some(q) if is_quant_name(q) => Selector::Quant(q.to_ascii_lowercase()),
            Some(other) => {
                return Err(bad(&format!(
                    "`{other}` is neither a .gguf file nor a quantization such as q4_k_m"
                )));
            }
        };
        Ok(Some(HubRef {
            repo: repo.to_string(),
            revision,
            selector,
        }))
    }

    /// The one spelling the manifest records: `hf:org/repo[@rev][:selector]`.
    pub fn canonical(&self) -> String {
        let mut s = format!("hf:{}", self.repo);
        if self.revision != "main" {
            s.push('@');
            s.push_str(&self.revision);
        }
        match &self.selector {
            Selector::Default => {}
            Selector::File(f) => {
                s.push(':');
                s.push_str(f);
            }
            Selector::Quant(q) => {
                s.push(':');
                s.push_str(q);
            }
        }
        s
    }
}

/// `(stem, part, count)` for a split GGUF named `stem-00001-of-00003.gguf`.
pub fn split_part(path: &str) -> Option<(&str, u32, u32)> {
    let stem = path.strip_suffix(".gguf")?;
    let (head, count) = stem.rsplit_once("-of-")?;
    let (stem, part) = head.rsplit_once('-')?;
    let digits = |s: &str| s.len() == 5 && s.chars().all(|c| c.is_ascii_digit());
    if !digits(part) || !digits(count) {
        return None;
    }
    Some((stem, part.parse().ok()?, count.parse().ok()?))
}

/// Whether the file path names quantization `quant` as a whole token (`q4_k` does not match
/// `q4_k_m`, `q4_0` does not match `iq4_0`).
pub fn path_has_quant(path: &str, quant: &str) -> bool {
    let p = path.to_ascii_lowercase();
    let q = quant.to_ascii_lowercase();
    let bytes = p.as_bytes();
    let mut from = 0;
    while let Some(i) = p[from..].find(&q) {
        let start = from + i;
        let end = start + q.len();
        let before_ok = start == 0 || !bytes[start - 1].is_ascii_alphanumeric();
        let after_ok =
            end == p.len() || !(bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_');
        if before_ok && after_ok {
            return true;
        }
        from = start + 1;
    }
    false
}

/// The quantization a GGUF file name states, if any (`qwen2.5-0.5b-instruct-q4_k_m.gguf` →
/// `q4_k_m`).
pub fn quant_of_path(path: &str) -> Option<String> {
    let name = path.rsplit('/').next().unwrap_or(path).to_ascii_lowercase();
    let stem = name.strip_suffix(".gguf").unwrap_or(&name);
    let stem = split_part(&name).map_or(stem, |(s, _, _)| s);
    // The quant is the last `-` or `.`-separated token that reads as one, where underscores
    // join its pieces (`q4_k_m`).
    stem.rsplit(['-', '.'])
        .find(|tok| is_quant_name(tok))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code fails loudly")]
    use super::*;

    #[test]
    fn parses_hub_names() {
        let r = HubRef::parse("hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M")
            .unwrap()
            .unwrap();
        assert_eq!(r.repo, "Qwen/Qwen2.5-0.5B-Instruct-GGUF");
        assert_eq!(r.revision, "main");
        assert_eq!(r.selector, Selector::Quant("q4_k_m".into()));
        assert_eq!(r.canonical(), "hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF:q4_k_m");

        let r = HubRef::parse("hf.co/org/repo@v1.0:sub/model-f16.gguf")
            .unwrap()
            .unwrap();
        assert_eq!(r.revision, "v1.0");
        assert_eq!(r.selector, Selector::File("sub/model-f16.gguf".into()));
        assert_eq!(r.canonical(), "hf:org/repo@v1.0:sub/model-f16.gguf");

        assert_eq!(
            HubRef::parse("hf:org/repo").unwrap().unwrap().selector,
            Selector::Default
        );
        assert!(HubRef::parse("./model.gguf").unwrap().is_none());
        assert!(HubRef::parse("qwen2.5:0.5b").unwrap().is_none());
        for bad in [
            "hf:repo",
            "hf:a/b/c",
            "hf:org/repo:weird",
            "hf:o/r:../x.gguf",
            "hf:o/..",
        ] {
            assert!(HubRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn quant_tokens_match_whole() {
        assert!(path_has_quant(
            "qwen2.5-0.5b-instruct-q4_k_m.gguf",
            "q4_k_m"
        ));
        assert!(path_has_quant(
            "Q4_K_M/model-Q4_K_M-00001-of-00002.gguf",
            "q4_k_m"
        ));
        assert!(!path_has_quant("model-q4_k_m.gguf", "q4_k"));
        assert!(!path_has_quant("model-iq4_xs.gguf", "q4_xs"));
        assert!(!path_has_quant("model-q4_0_4_4.gguf", "q4_0"));
        assert_eq!(
            quant_of_path("SmolLM2-135M-Instruct.Q4_1.gguf").as_deref(),
            Some("q4_1")
        );
        assert_eq!(
            quant_of_path("qwen2.5-7b-instruct-q4_k_m-00001-of-00002.gguf").as_deref(),
            Some("q4_k_m")
        );
        assert_eq!(
            split_part("a-q4_k_m-00002-of-00003.gguf"),
            Some(("a-q4_k_m", 2, 3))
        );
        assert_eq!(split_part("a-q4_k_m.gguf"), None);
    }
}
