//! The store's commands besides `pull`: `import`, `ls`, `show`, `rm`, `cp`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Parser};
use forja_arch::{GgufHeader, ModelDescription};
use forja_store::ManifestEntry;

use crate::model_arg::open_store;
use crate::output::{out, outln};
use crate::table::Table;
use crate::units::{bytes_auto, params, tokens};

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// A .gguf file or an HF model folder (config.json, safetensors, tokenizer)
    path: PathBuf,
    /// The name to store it under [default: the file or folder name, lower-case]
    #[arg(long)]
    name: Option<String>,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Print JSON
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// A name from `forja ls`
    name: String,
    /// Print the whole chat template
    #[arg(long)]
    template: bool,
    /// Leave out the plan for this machine
    #[arg(long)]
    no_plan: bool,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Names from `forja ls`
    #[arg(required = true)]
    names: Vec<String>,
}

#[derive(Debug, Args)]
pub struct CpArgs {
    /// A name from `forja ls`
    from: String,
    /// The new name (shares the files)
    to: String,
}

pub fn import(a: ImportArgs) -> Result<()> {
    let store = open_store()?;
    let e = store
        .import(&a.path, a.name.as_deref())
        .with_context(|| format!("importing {}", a.path.display()))?;
    outln!("{} ({})", e.name, crate::cmd_pull::summary(&e));
    outln!("  {}", e.path.display());
    Ok(())
}

fn dash(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.to_string()
    }
}

/// `YYYY-MM-DD` of a Unix time (UTC), from the civil-from-days algorithm.
fn date(unix: u64) -> String {
    let z = (unix / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

pub fn ls(a: LsArgs) -> Result<()> {
    let store = open_store()?;
    let entries = store.list()?;
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(());
    }
    if entries.is_empty() {
        outln!("no models yet: `forja pull NAME` downloads one, `forja import PATH` adds a file");
        return Ok(());
    }
    let mut t = Table::new(&[
        "Name", "size", "quant", "arch", "params", "context", "added",
    ]);
    for e in &entries {
        t.row(vec![
            e.name.clone(),
            bytes_auto(e.size_bytes as f64),
            dash(&e.quant),
            dash(&e.arch),
            if e.params > 0 {
                params(e.params)
            } else {
                "-".into()
            },
            if e.context > 0 {
                tokens(e.context)
            } else {
                "-".into()
            },
            date(e.added_unix),
        ]);
    }
    out!("{}", t.render());
    Ok(())
}

/// The chat template the files carry: GGUF metadata, `chat_template.jinja`, or
/// `tokenizer_config.json`'s `chat_template` (a string, or a list of named templates).
fn chat_template(path: &Path) -> Option<String> {
    if path.is_file() {
        let h = GgufHeader::read_path(path).ok()?;
        return h
            .get("tokenizer.chat_template")
            .and_then(|v| v.as_str())
            .map(str::to_string);
    }
    if let Ok(t) = std::fs::read_to_string(path.join("chat_template.jinja")) {
        return Some(t);
    }
    let text = std::fs::read_to_string(path.join("tokenizer_config.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    match v.get("chat_template")? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Array(list) => list
            .iter()
            .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
            .or_else(|| list.first())
            .and_then(|t| t.get("template"))
            .and_then(|t| t.as_str())
            .map(str::to_string),
        _ => None,
    }
}

/// The license: the manifest's (from the hub's model card), the GGUF's `general.license`, or the
/// `license:` line of a README's front matter.
fn license(e: &ManifestEntry) -> Option<String> {
    if let Some(l) = &e.license {
        return Some(l.clone());
    }
    if e.path.is_file() {
        let h = GgufHeader::read_path(&e.path).ok()?;
        return h
            .get("general.license")
            .and_then(|v| v.as_str())
            .map(str::to_string);
    }
    let readme = std::fs::read_to_string(e.path.join("README.md")).ok()?;
    let front = readme.strip_prefix("---")?.split("\n---").next()?;
    front
        .lines()
        .find_map(|l| l.trim().strip_prefix("license:"))
        .map(|l| l.trim().trim_matches('"').to_string())
}

#[derive(Parser)]
struct PlanOnly {
    #[command(flatten)]
    plan: crate::cmd_plan::PlanArgs,
}

pub fn show(a: ShowArgs) -> Result<()> {
    let store = open_store()?;
    let e = store
        .get(&a.name)?
        .ok_or_else(|| anyhow::anyhow!("no model `{}` in the store (see `forja ls`)", a.name))?;
    let d = ModelDescription::from_path(&e.path)
        .with_context(|| format!("reading {}", e.path.display()))?;
    let c = &d.config;
    outln!("{}", e.name);
    outln!("  source        {}", e.source);
    outln!("  path          {}", e.path.display());
    if let Some(commit) = &e.commit {
        outln!("  revision      {commit}");
    }
    outln!(
        "  added         {}, {} in {} file(s)",
        date(e.added_unix),
        bytes_auto(e.size_bytes as f64),
        e.files.len()
    );
    outln!(
        "  license       {}",
        license(&e).unwrap_or_else(|| "not stated in the files".into())
    );
    outln!("\nArchitecture");
    outln!("  family        {}", dash(&e.arch));
    outln!("  parameters    {}", params(d.weights(None).params));
    outln!("  quantization  {}", dash(&e.quant));
    outln!(
        "  layers        {} (hidden {}, {} heads, {} KV heads, head dim {})",
        c.num_layers,
        c.hidden_size,
        c.num_heads,
        c.num_kv_heads,
        c.head_dim
    );
    outln!("  vocabulary    {}", c.vocab_size);
    outln!("  context       {} tokens", tokens(c.max_context));
    outln!("\nChat template");
    match chat_template(&e.path) {
        None => outln!("  none in the files (plain completion; `forja run --raw`)"),
        Some(t) => {
            let lines: Vec<&str> = t.lines().collect();
            let shown = if a.template { lines.len() } else { 12 };
            for l in lines.iter().take(shown) {
                outln!("  {l}");
            }
            if lines.len() > shown {
                outln!(
                    "  … {} more lines (`--template` prints them all)",
                    lines.len() - shown
                );
            }
        }
    }
    if !a.no_plan {
        outln!("\nPlan for this machine (`forja plan {} --here`)", e.name);
        let args = PlanOnly::try_parse_from(["plan", e.name.as_str(), "--here"])?;
        crate::cmd_plan::run(args.plan)?;
    }
    Ok(())
}

pub fn rm(a: RmArgs) -> Result<()> {
    let store = open_store()?;
    for name in &a.names {
        let r = store.remove(name)?;
        if r.freed_bytes > 0 {
            outln!(
                "removed {} (freed {})",
                r.entry.name,
                bytes_auto(r.freed_bytes as f64)
            );
        } else if !r.entry.owned {
            outln!(
                "removed {} (its files stay in the Hugging Face cache: another tool put them there)",
                r.entry.name
            );
        } else {
            outln!(
                "removed {} (its files stay: other names use them)",
                r.entry.name
            );
        }
    }
    Ok(())
}

pub fn cp(a: CpArgs) -> Result<()> {
    let store = open_store()?;
    let e = store.copy(&a.from, &a.to)?;
    outln!("{} → {}", e.name, e.path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::date;

    #[test]
    fn dates_are_civil_utc() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(951_782_400), "2000-02-29");
        assert_eq!(date(1_795_651_200), "2026-11-26");
    }
}
