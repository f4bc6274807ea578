//! `forja import PATH`: copies a GGUF file or an HF model folder into `$FORJA_HOME/models/NAME`
//! (through a temporary folder and a rename, hashing as it copies) and records it.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::StoreError;
use crate::manifest::{ManifestEntry, ManifestFile};
use crate::store::{Store, now_unix};

/// The name an import gets by default: the file's stem or the folder's name, lower-case.
pub fn default_import_name(path: &Path) -> String {
    let base = if path.is_dir() {
        path.file_name()
    } else {
        path.file_stem()
    };
    base.map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_else(|| "model".into())
}

/// A folder name safe on every file system for a store name.
fn folder_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Every regular file under `root` (hidden ones skipped), relative paths sorted.
fn files_under(root: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let rd = std::fs::read_dir(&dir).map_err(|e| StoreError::io(&dir, e))?;
        for e in rd {
            let e = e.map_err(|e| StoreError::io(&dir, e))?;
            if e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let p = e.path();
            let meta = std::fs::metadata(&p).map_err(|x| StoreError::io(&p, x))?;
            if meta.is_dir() {
                stack.push(p);
            } else if meta.is_file()
                && let Ok(rel) = p.strip_prefix(root)
            {
                out.push(rel.to_path_buf());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Copies `from` to `to`, returning its sha256 (hex).
fn copy_hashing(from: &Path, to: &Path) -> Result<String, StoreError> {
    let mut src = std::fs::File::open(from).map_err(|e| StoreError::io(from, e))?;
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
    }
    let mut dst = std::fs::File::create(to).map_err(|e| StoreError::io(to, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = src.read(&mut buf).map_err(|e| StoreError::io(from, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        dst.write_all(&buf[..n])
            .map_err(|e| StoreError::io(to, e))?;
    }
    dst.sync_all().map_err(|e| StoreError::io(to, e))?;
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

impl Store {
    /// Imports the model at `path` as `name` (default: see [`default_import_name`]).
    pub fn import(&self, path: &Path, name: Option<&str>) -> Result<ManifestEntry, StoreError> {
        let src = std::fs::canonicalize(path).map_err(|e| StoreError::io(path, e))?;
        // Refuse what forja cannot read before copying anything.
        forja_arch::ModelDescription::from_path(&src).map_err(|source| StoreError::Describe {
            path: src.clone(),
            source,
        })?;
        let name = name.map_or_else(|| default_import_name(&src), |n| n.trim().to_string());
        if name.is_empty() {
            return Err(StoreError::BadName {
                given: name,
                why: "a name needs at least one visible character".into(),
            });
        }
        if self.manifest().get(&name)?.is_some() {
            return Err(StoreError::NameTaken { name });
        }
        let (root, rels) = if src.is_dir() {
            (src.clone(), files_under(&src)?)
        } else {
            let parent = src.parent().unwrap_or(Path::new("/")).to_path_buf();
            let file = src.file_name().map(PathBuf::from).unwrap_or_default();
            (parent, vec![file])
        };
        let mut total = 0;
        for r in &rels {
            let p = root.join(r);
            total += std::fs::metadata(&p)
                .map_err(|e| StoreError::io(&p, e))?
                .len();
        }
        let imports = self.config().imports_dir();
        std::fs::create_dir_all(&imports).map_err(|e| StoreError::io(&imports, e))?;
        let free = forja_hw::disk::probe(&imports).map_or(u64::MAX, |d| d.free_bytes);
        if total > free {
            return Err(StoreError::NoSpace {
                path: imports,
                need_bytes: total,
                free_bytes: free,
            });
        }
        let dest = imports.join(folder_name(&name));
        if dest.exists() {
            return Err(StoreError::NameTaken { name });
        }
        let tmp = imports.join(format!(
            ".{}.importing-{}",
            folder_name(&name),
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&tmp);
        let copied = (|| {
            let mut files = Vec::with_capacity(rels.len());
            for r in &rels {
                let from = root.join(r);
                let sha = copy_hashing(&from, &tmp.join(r))?;
                files.push(ManifestFile {
                    path: r.to_string_lossy().replace('\\', "/"),
                    size: std::fs::metadata(&from).map_or(0, |m| m.len()),
                    sha256: Some(sha),
                    blob: None,
                });
            }
            std::fs::rename(&tmp, &dest).map_err(|e| StoreError::io(&dest, e))?;
            Ok::<_, StoreError>(files)
        })();
        let files = match copied {
            Ok(f) => f,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(e);
            }
        };
        let model_path = if src.is_dir() {
            dest.clone()
        } else {
            dest.join(&rels[0])
        };
        let facts = crate::store::facts(&model_path);
        let facts = match facts {
            Ok(f) => f,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dest);
                return Err(e);
            }
        };
        let entry = ManifestEntry {
            name,
            source: format!("import:{}", src.display()),
            path: model_path,
            repo: None,
            commit: None,
            files,
            size_bytes: total,
            arch: facts.arch,
            quant: facts.quant,
            params: facts.params,
            context: facts.context,
            license: None,
            added_unix: now_unix(),
            owned: true,
        };
        if let Err(e) = self.manifest().put(&entry) {
            let _ = std::fs::remove_dir_all(&dest);
            return Err(e);
        }
        Ok(entry)
    }
}
