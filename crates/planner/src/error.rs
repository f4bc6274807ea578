//! The one error type of the planner.

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Arch(#[from] forja_arch::ArchError),

    #[error("unknown model {given:?}{}: see `forja catalog`, or pass a config.json, a model folder or a .gguf file", suggest(.suggestions))]
    UnknownModel {
        given: String,
        suggestions: Vec<String>,
    },

    #[error("unknown GPU {given:?}{}: see `forja catalog --hardware`", suggest(.suggestions))]
    UnknownGpu {
        given: String,
        suggestions: Vec<String>,
    },

    #[error("invalid {what}: {why}")]
    Invalid { what: &'static str, why: String },

    #[error("the built-in catalog is corrupt ({file}): {why}")]
    Catalog { file: &'static str, why: String },
}

fn suggest(s: &[String]) -> String {
    if s.is_empty() {
        String::new()
    } else {
        format!(" (did you mean {}?)", s.join(", "))
    }
}
