//! `forja collections`: the collections of a RAG store with their size and embedding model;
//! `forja collections rm NAME` deletes one with its documents, chunks and vectors.

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use serde_json::json;

use crate::output::outln;
use crate::rag_setup::{open_store_at, store_location};
use crate::table::Table;

#[derive(Debug, Args)]
pub struct CollectionsArgs {
    #[command(subcommand)]
    action: Option<Action>,
    /// The store: a SQLite file, or postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE
    /// [default: $FORJA_HOME/rag.sqlite]
    #[arg(long, value_name = "FILE|URL", env = "FORJA_RAG_STORE", global = true)]
    store: Option<String>,
    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Delete a collection: its documents, chunks and vectors (the files ingested stay)
    Rm {
        /// The collection's name
        name: String,
    },
}

pub fn run(a: CollectionsArgs) -> Result<()> {
    let location = store_location(a.store.as_deref());
    let store = open_store_at(
        &location,
        true,
        "ingest documents first: `forja ingest PATH --collection NAME`",
    )?;
    match a.action {
        Some(Action::Rm { name }) => {
            if !store.delete_collection(&name)? {
                bail!("no collection named {name:?} in {location}");
            }
            outln!("deleted collection {name}");
        }
        None => {
            let all = store.collections()?;
            if a.json {
                let list: Vec<_> = all
                    .iter()
                    .map(|c| {
                        json!({
                            "name": c.collection.name,
                            "documents": c.documents,
                            "chunks": c.chunks,
                            "embedding_model": c.collection.embedding_model,
                            "dimension": c.collection.dimension,
                        })
                    })
                    .collect();
                outln!("{}", serde_json::to_string_pretty(&list)?);
            } else if all.is_empty() {
                outln!("no collections in {location}");
            } else {
                let mut t = Table::new(&["NAME", "DOCUMENTS", "CHUNKS", "EMBEDDING MODEL", "DIM"]);
                for c in &all {
                    t.row(vec![
                        c.collection.name.clone(),
                        c.documents.to_string(),
                        c.chunks.to_string(),
                        c.collection.embedding_model.clone(),
                        c.collection.dimension.to_string(),
                    ]);
                }
                outln!("{}", t.render().trim_end());
            }
        }
    }
    Ok(())
}
