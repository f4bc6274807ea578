//! forja's manifest: one SQLite file (`$FORJA_HOME/manifest.sqlite`) mapping each model name to
//! its files (with sha256 and size), what it is (architecture, quantization, parameters,
//! context), where it came from and when. An entry is written only after all its files are in
//! place and verified.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::error::StoreError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// Path inside the repository or imported folder.
    pub path: String,
    pub size: u64,
    pub sha256: Option<String>,
    /// The blob's name in the hub cache (pulled files only).
    #[serde(default)]
    pub blob: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ManifestEntry {
    pub name: String,
    /// `hf:org/repo[:selector]` for pulls, `import:PATH` for imports.
    pub source: String,
    /// What to load: the GGUF file (the first part of a split one) or the model folder.
    pub path: PathBuf,
    /// Hub repository and commit, for pulled models.
    pub repo: Option<String>,
    pub commit: Option<String>,
    pub files: Vec<ManifestFile>,
    pub size_bytes: u64,
    /// `llama`, `qwen2`, … (the family the model loads as).
    pub arch: String,
    /// `q4_k_m`, `bf16`, … as stored.
    pub quant: String,
    pub params: u64,
    pub context: u64,
    pub license: Option<String>,
    /// Seconds since the Unix epoch.
    pub added_unix: u64,
    /// Whether forja put the files there (a pull that downloaded, or an import); `rm` deletes
    /// only such files.
    pub owned: bool,
}

pub(crate) struct Manifest {
    conn: Connection,
    path: PathBuf,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS models (
    name TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    path TEXT NOT NULL,
    repo TEXT,
    commit_id TEXT,
    files TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    arch TEXT NOT NULL,
    quant TEXT NOT NULL,
    params INTEGER NOT NULL,
    context INTEGER NOT NULL,
    license TEXT,
    added_unix INTEGER NOT NULL,
    owned INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS models_source ON models(source);
";

const COLUMNS: &str = "name, source, path, repo, commit_id, files, size_bytes, arch, quant, \
                       params, context, license, added_unix, owned";

impl Manifest {
    /// The manifest at `path`, or (with `create` false and no file there) an empty one in
    /// memory, so that lookups create nothing.
    pub fn open(path: &Path, create: bool) -> Result<Self, StoreError> {
        let err = |why: String| StoreError::Manifest {
            path: path.to_path_buf(),
            why,
        };
        let conn = if !create && !path.exists() {
            Connection::open_in_memory().map_err(|e| err(e.to_string()))?
        } else {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
            }
            Connection::open(path).map_err(|e| err(e.to_string()))?
        };
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(|e| err(e.to_string()))?;
        conn.execute_batch(SCHEMA).map_err(|e| err(e.to_string()))?;
        Ok(Manifest {
            conn,
            path: path.to_path_buf(),
        })
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        move |e| StoreError::Manifest {
            path: self.path.clone(),
            why: e.to_string(),
        }
    }

    /// Adds or replaces the entry of `e.name`.
    pub fn put(&self, e: &ManifestEntry) -> Result<(), StoreError> {
        let files = serde_json::to_string(&e.files).map_err(|x| StoreError::Manifest {
            path: self.path.clone(),
            why: x.to_string(),
        })?;
        self.conn
            .execute(
                &format!(
                    "INSERT OR REPLACE INTO models ({COLUMNS}) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
                ),
                params![
                    e.name,
                    e.source,
                    e.path.to_string_lossy(),
                    e.repo,
                    e.commit,
                    files,
                    e.size_bytes as i64,
                    e.arch,
                    e.quant,
                    e.params as i64,
                    e.context as i64,
                    e.license,
                    e.added_unix as i64,
                    e.owned,
                ],
            )
            .map_err(self.err())?;
        Ok(())
    }

    fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ManifestEntry> {
        let files: String = r.get(5)?;
        let files: Vec<ManifestFile> = serde_json::from_str(&files).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(5, rusqlite::types::Type::Text, Box::new(e))
        })?;
        let path: String = r.get(2)?;
        Ok(ManifestEntry {
            name: r.get(0)?,
            source: r.get(1)?,
            path: PathBuf::from(path),
            repo: r.get(3)?,
            commit: r.get(4)?,
            files,
            size_bytes: r.get::<_, i64>(6)? as u64,
            arch: r.get(7)?,
            quant: r.get(8)?,
            params: r.get::<_, i64>(9)? as u64,
            context: r.get::<_, i64>(10)? as u64,
            license: r.get(11)?,
            added_unix: r.get::<_, i64>(12)? as u64,
            owned: r.get(13)?,
        })
    }

    pub fn get(&self, name: &str) -> Result<Option<ManifestEntry>, StoreError> {
        self.conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM models WHERE name = ?1"),
                [name],
                Self::row,
            )
            .optional()
            .map_err(self.err())
    }

    /// The entries pulled or imported from `source`.
    pub fn by_source(&self, source: &str) -> Result<Vec<ManifestEntry>, StoreError> {
        let mut st = self
            .conn
            .prepare(&format!(
                "SELECT {COLUMNS} FROM models WHERE source = ?1 ORDER BY name"
            ))
            .map_err(self.err())?;
        let rows = st.query_map([source], Self::row).map_err(self.err())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.err())
    }

    pub fn all(&self) -> Result<Vec<ManifestEntry>, StoreError> {
        let mut st = self
            .conn
            .prepare(&format!("SELECT {COLUMNS} FROM models ORDER BY name"))
            .map_err(self.err())?;
        let rows = st.query_map([], Self::row).map_err(self.err())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.err())
    }

    pub fn delete(&self, name: &str) -> Result<bool, StoreError> {
        let n = self
            .conn
            .execute("DELETE FROM models WHERE name = ?1", [name])
            .map_err(self.err())?;
        Ok(n > 0)
    }
}
