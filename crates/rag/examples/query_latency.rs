//! Query latency of a store at a given size: fills a collection with real text (every file of a
//! folder, ingested again under another prefix until the collection holds `--chunks` chunks),
//! then times `search` in each mode over `--queries` queries taken from that text.
//!
//! The vectors come from a hashed bag of words (signed feature hashing into 384 dimensions, the
//! size of all-MiniLM-L6-v2's), not from a neural model, so that 100k chunks are embedded in
//! seconds: texts that share words still get close vectors. SQLite's vector search scans every
//! vector exactly, so its cost depends on the count and dimension, not on the values; the keyword
//! index is built from the real text. The time to embed a query with the real model is measured
//! by `bench/rag/embed-vs-sentence-transformers.sh` and adds to the vector and hybrid rows.
//!
//! Usage: cargo run --release -p forja-rag --example query_latency -- STORE TEXT_DIR
//!        [--chunks 100000] [--queries 300] [--k 5]     (--queries 0: fill only)
//! STORE: a SQLite file or a postgres:// URL (the collection `latency` is reused if full).

use std::path::PathBuf;
use std::time::Instant;

use forja_rag::{
    ChunkOptions, Embedder, Result, SearchMode, SearchQuery, Store, ingest_bytes, search,
};

const DIM: usize = 384;
const COLLECTION: &str = "latency";

/// Words hashed into signed features, L2-normalized.
struct HashedWords;

fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

fn fnv(word: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in word.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl Embedder for HashedWords {
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        Ok(texts
            .iter()
            .map(|t| {
                let mut v = vec![0.0f32; DIM];
                for w in words(t) {
                    let h = fnv(&w);
                    for j in 0..3 {
                        let bits = h >> (j * 21);
                        let sign = if bits & 1 == 0 { 1.0 } else { -1.0 };
                        v[((bits >> 1) % DIM as u64) as usize] += sign;
                    }
                }
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
                v.iter_mut().for_each(|x| *x /= norm);
                v
            })
            .collect())
    }
    fn dimension(&self) -> usize {
        DIM
    }
    fn max_tokens(&self) -> usize {
        256
    }
    fn count_tokens(&self, text: &str) -> Result<usize> {
        Ok(words(text).count() + 2)
    }
    fn name(&self) -> String {
        "hashed-words-384".into()
    }
}

struct Args {
    store: String,
    dir: PathBuf,
    chunks: usize,
    queries: usize,
    k: usize,
}

fn args() -> std::result::Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mut positional = Vec::new();
    let (mut chunks, mut queries, mut k) = (100_000, 300, 5);
    while let Some(a) = it.next() {
        let mut number = |name: &str| -> std::result::Result<usize, String> {
            it.next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{name} needs a number"))
        };
        match a.as_str() {
            "--chunks" => chunks = number("--chunks")?,
            "--queries" => queries = number("--queries")?,
            "--k" => k = number("--k")?,
            _ => positional.push(a),
        }
    }
    let [store, dir] = <[String; 2]>::try_from(positional)
        .map_err(|_| "usage: query_latency STORE TEXT_DIR [--chunks N] [--queries N] [--k N]")?;
    Ok(Args {
        store,
        dir: dir.into(),
        chunks,
        queries,
        k,
    })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let a = args()?;
    let store = Store::open_location(&a.store)?;
    let embedder = HashedWords;
    let c = store.ensure_collection(COLLECTION, &embedder.name(), DIM)?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(&a.dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(format!("no files in {}", a.dir.display()).into());
    }
    let texts: Vec<(String, Vec<u8>)> = files
        .iter()
        .map(|p| {
            let name = p
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            Ok((name, std::fs::read(p)?))
        })
        .collect::<std::io::Result<_>>()?;
    let options = ChunkOptions::for_model(embedder.max_tokens());
    let fill = Instant::now();
    let mut round = 0;
    let mut chunks = store.chunk_counts(&c)?.0;
    'fill: while chunks < a.chunks {
        for (name, bytes) in &texts {
            let key = format!("copy{round}/{name}");
            let (_, n) = ingest_bytes(&store, &c, &key, bytes, None, &embedder, options)?;
            chunks += n;
            if chunks >= a.chunks {
                break 'fill;
            }
        }
        round += 1;
        eprintln!(
            "{chunks} chunks after {:.0} s",
            fill.elapsed().as_secs_f64()
        );
    }
    let (chunks, _, _) = store.chunk_counts(&c)?;
    let documents = store
        .collections()?
        .into_iter()
        .find(|s| s.collection.name == COLLECTION)
        .map_or(0, |s| s.documents);
    eprintln!(
        "collection: {documents} documents, {chunks} chunks (filled in {:.0} s)",
        fill.elapsed().as_secs_f64()
    );

    if a.queries == 0 {
        return Ok(());
    }
    // Queries: lines of the text of 6 to 40 words, mostly letters, cut to their first 12 words,
    // spread evenly over the text.
    let lines: Vec<String> = texts
        .iter()
        .flat_map(|(_, b)| {
            String::from_utf8_lossy(b)
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter(|l| {
            let words = l.split_whitespace().count();
            let letters = l.chars().filter(|c| c.is_alphabetic()).count();
            (6..=40).contains(&words) && letters * 2 > l.len()
        })
        .collect();
    let step = (lines.len() / a.queries.max(1)).max(1);
    let queries: Vec<String> = lines
        .iter()
        .step_by(step)
        .take(a.queries)
        .map(|l| l.split_whitespace().take(12).collect::<Vec<_>>().join(" "))
        .collect();
    println!(
        "| store | chunks | mode | queries | k | p50 ms | p99 ms | mean ms |\n|---|---|---|---|---|---|---|---|"
    );
    let kind = if forja_rag::is_postgres_url(&a.store) {
        "postgres"
    } else {
        "sqlite"
    };
    for (mode, name) in [
        (SearchMode::Bm25, "bm25"),
        (SearchMode::Vector, "vector"),
        (SearchMode::Hybrid, "hybrid"),
    ] {
        // One untimed pass warms the caches (pages of the store file, prepared statements).
        for q in queries.iter().take(10) {
            let query = SearchQuery {
                text: q.clone(),
                mode,
                k: a.k,
                filters: Default::default(),
            };
            search(&store, COLLECTION, &query, Some(&embedder))?;
        }
        let mut ms = Vec::with_capacity(queries.len());
        for q in &queries {
            let query = SearchQuery {
                text: q.clone(),
                mode,
                k: a.k,
                filters: Default::default(),
            };
            let t = Instant::now();
            let hits = search(&store, COLLECTION, &query, Some(&embedder))?;
            ms.push(t.elapsed().as_secs_f64() * 1e3);
            if hits.is_empty() {
                return Err(format!("{name}: no result for {q:?}").into());
            }
        }
        let mean = ms.iter().sum::<f64>() / ms.len() as f64;
        ms.sort_by(f64::total_cmp);
        println!(
            "| {kind} | {chunks} | {name} | {} | {} | {:.2} | {:.2} | {mean:.2} |",
            ms.len(),
            a.k,
            percentile(&ms, 0.5),
            percentile(&ms, 0.99)
        );
    }
    Ok(())
}
