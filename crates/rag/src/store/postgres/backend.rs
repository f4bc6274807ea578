//! The PostgreSQL store behind the [`Backend`] interface: its queries.

use std::collections::HashMap;
use std::path::PathBuf;

use super::*;

/// BM25 over the chunks of collection `$1` for the query words `$2` (text[]): the query's
/// lexemes, each with its document frequency (through the GIN index), then every chunk holding
/// any of them scored term by term with FTS5's formula, best first; filters follow from `$4`.
const BM25_SQL: &str = r"
WITH q AS (
    SELECT DISTINCT u.lexeme,
        ('''' || replace(replace(u.lexeme, '\', '\\'), '''', '''''') || '''')::tsquery AS tq
    FROM unnest(to_tsvector('forja_rag.english', array_to_string($2::text[], ' '))) u
), df AS (
    SELECT q.lexeme,
        (SELECT count(*) FROM chunks k WHERE k.collection_id = $1 AND k.search_text @@ q.tq)::float8
            AS n
    FROM q
), stats AS (
    SELECT chunk_count::float8 AS n,
        greatest(term_count::float8 / greatest(chunk_count, 1), 1e-9) AS avgdl
    FROM collections WHERE id = $1
)
SELECT c.id, sum(
        greatest(ln((stats.n - df.n + 0.5) / (df.n + 0.5)), 1e-6)
        * t.tf * 2.2 / (t.tf + 1.2 * (0.25 + 0.75 * c.terms / stats.avgdl))
    ) AS score
FROM chunks c
    JOIN documents d ON d.id = c.document_id
    CROSS JOIN stats
    CROSS JOIN LATERAL (
        SELECT u.lexeme, coalesce(cardinality(u.positions), 1)::float8 AS tf
        FROM unnest(c.search_text) u
    ) t
    JOIN df ON df.lexeme = t.lexeme
WHERE c.collection_id = $1
    AND c.search_text @@ (SELECT string_agg(q.tq::text, ' | ')::tsquery FROM q)";

impl Backend for PgStore {
    fn location(&self) -> &str {
        &self.location
    }

    fn schema_version(&self) -> Result<usize> {
        self.run("reading the schema version", async |conn| {
            sqlx::query_scalar::<_, i32>("SELECT coalesce(max(version), 0) FROM schema_version")
                .fetch_one(conn)
                .await
        })
        .map(|v| v.max(0) as usize)
    }

    fn collection(&self, name: &str) -> Result<Option<Collection>> {
        self.run("reading collections", async |conn| {
            let row = sqlx::query(
                "SELECT id, name, embedding_model, dimension FROM collections WHERE name = $1",
            )
            .bind(name)
            .fetch_optional(conn)
            .await?;
            row.as_ref().map(collection_of).transpose()
        })
    }

    fn create_collection(
        &self,
        name: &str,
        embedding_model: &str,
        dimension: usize,
    ) -> Result<Collection> {
        if dimension > VECTOR_MAX_DIMENSIONS {
            return Err(RagError::Input(format!(
                "embeddings of {dimension} dimensions: pgvector stores at most \
                 {VECTOR_MAX_DIMENSIONS}"
            )));
        }
        let created = self.run("creating a collection", async |conn| {
            let mut tx = conn.begin().await?;
            let id: Option<i64> = sqlx::query_scalar(
                "INSERT INTO collections (name, embedding_model, dimension) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO NOTHING RETURNING id",
            )
            .bind(name)
            .bind(embedding_model)
            .bind(to_i32(dimension))
            .fetch_optional(&mut *tx)
            .await?;
            let Some(id) = id else {
                // Another writer created it meanwhile.
                return Ok(None);
            };
            let table = vec_table(id);
            let mut ddl = format!(
                "CREATE TABLE {table} (chunk_id BIGINT PRIMARY KEY \
                 REFERENCES forja_rag.chunks(id) ON DELETE CASCADE, \
                 embedding vector({dimension}) NOT NULL);"
            );
            if dimension <= HNSW_MAX_DIMENSIONS {
                ddl +=
                    &format!("CREATE INDEX ON {table} USING hnsw (embedding vector_cosine_ops);");
            }
            sqlx::raw_sql(AssertSqlSafe(ddl)).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(Some(id))
        })?;
        match created {
            Some(id) => Ok(Collection {
                id,
                name: name.to_string(),
                embedding_model: embedding_model.to_string(),
                dimension,
            }),
            None => self.collection(name)?.ok_or_else(|| RagError::Collection {
                name: name.to_string(),
                what: "created and deleted by another writer at the same time".into(),
            }),
        }
    }

    fn collections(&self) -> Result<Vec<CollectionStats>> {
        self.run("listing collections", async |conn| {
            let rows = sqlx::query(
                "SELECT c.id, c.name, c.embedding_model, c.dimension, \
                 (SELECT count(*) FROM documents d WHERE d.collection_id = c.id), \
                 (SELECT count(*) FROM chunks k WHERE k.collection_id = c.id) \
                 FROM collections c ORDER BY c.name COLLATE \"C\"",
            )
            .fetch_all(conn)
            .await?;
            rows.iter()
                .map(|r| {
                    Ok(CollectionStats {
                        collection: collection_of(r)?,
                        documents: r.try_get::<i64, _>(4)?.max(0) as usize,
                        chunks: r.try_get::<i64, _>(5)?.max(0) as usize,
                    })
                })
                .collect()
        })
    }

    fn delete_collection(&self, c: &Collection) -> Result<()> {
        self.run("deleting a collection", async |conn| {
            let mut tx = conn.begin().await?;
            sqlx::raw_sql(AssertSqlSafe(format!(
                "DROP TABLE IF EXISTS {}",
                vec_table(c.id)
            )))
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM collections WHERE id = $1")
                .bind(c.id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await
        })
    }

    fn document(&self, c: &Collection, path: &str) -> Result<Option<StoredDocument>> {
        self.run("reading documents", async |conn| {
            let row: Option<(i64, String, String, Option<i64>)> = sqlx::query_as(
                "SELECT id, path, content_hash, mtime FROM documents \
                 WHERE collection_id = $1 AND path = $2",
            )
            .bind(c.id)
            .bind(path)
            .fetch_optional(conn)
            .await?;
            Ok(row.map(|(id, path, content_hash, mtime)| StoredDocument {
                id,
                path,
                content_hash,
                mtime,
            }))
        })
    }

    fn document_paths(&self, c: &Collection) -> Result<Vec<String>> {
        self.run("listing documents", async |conn| {
            sqlx::query_scalar(
                "SELECT path FROM documents WHERE collection_id = $1 ORDER BY path COLLATE \"C\"",
            )
            .bind(c.id)
            .fetch_all(conn)
            .await
        })
    }

    fn touch_document(&self, doc: &StoredDocument, mtime: Option<i64>) -> Result<()> {
        self.run("updating a document", async |conn| {
            sqlx::query("UPDATE documents SET mtime = $1 WHERE id = $2")
                .bind(mtime)
                .bind(doc.id)
                .execute(conn)
                .await
                .map(drop)
        })
    }

    fn replace_document(
        &self,
        c: &Collection,
        path: &str,
        doc: &Document,
        mtime: Option<i64>,
        chunks: &[Chunk],
        vectors: &[Vec<f32>],
    ) -> Result<()> {
        let insert_chunk = format!(
            "WITH v AS (SELECT to_tsvector('{TS_CONFIG}', $9) AS tsv), \
             c AS (INSERT INTO chunks (document_id, collection_id, ordinal, text, context, \
                 section, page, kind, span_start, span_end, tokens, search_text, terms) \
                 SELECT $1, $2, $3, $4, $5, $6, $7, $8, $10, $11, $12, v.tsv, \
                     (SELECT coalesce(sum(coalesce(cardinality(u.positions), 1)), 0)::integer \
                      FROM unnest(v.tsv) u) \
                 FROM v RETURNING id, terms), \
             x AS (INSERT INTO {} (chunk_id, embedding) SELECT id, $13 FROM c) \
             SELECT terms FROM c",
            vec_table(c.id)
        );
        self.run(&format!("storing {path}"), async |conn| {
            let mut tx = conn.begin().await?;
            let old = delete_document_rows(&mut tx, c, path).await?;
            let doc_id: i64 = sqlx::query_scalar(
                "INSERT INTO documents (collection_id, path, title, content_hash, mtime, date) \
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            )
            .bind(c.id)
            .bind(path)
            .bind(&doc.title)
            .bind(&doc.content_hash)
            .bind(mtime)
            .bind(doc.date)
            .fetch_one(&mut *tx)
            .await?;
            let mut terms: i64 = 0;
            for (chunk, vector) in chunks.iter().zip(vectors) {
                let t: i32 = sqlx::query_scalar(AssertSqlSafe(insert_chunk.as_str()))
                    .bind(doc_id)
                    .bind(c.id)
                    .bind(to_i32(chunk.ordinal))
                    .bind(&chunk.text)
                    .bind(&chunk.context)
                    .bind(&chunk.section)
                    .bind(chunk.page.map(|p| i32::try_from(p).unwrap_or(i32::MAX)))
                    .bind(chunk.kind.as_str())
                    .bind(chunk.embedding_text())
                    .bind(chunk.span.as_ref().map(|s| to_i64(s.start)))
                    .bind(chunk.span.as_ref().map(|s| to_i64(s.end)))
                    .bind(to_i32(chunk.tokens))
                    .bind(Vector::from(vector.clone()))
                    .fetch_one(&mut *tx)
                    .await?;
                terms += i64::from(t);
            }
            let added = to_i64(chunks.len());
            add_statistics(&mut tx, c, added - old.chunks, terms - old.terms).await?;
            tx.commit().await
        })
    }

    fn remove_document(&self, c: &Collection, path: &str) -> Result<bool> {
        self.run(&format!("removing {path}"), async |conn| {
            let mut tx = conn.begin().await?;
            let old = delete_document_rows(&mut tx, c, path).await?;
            add_statistics(&mut tx, c, -old.chunks, -old.terms).await?;
            tx.commit().await?;
            Ok(old.existed)
        })
    }

    /// Chunks, the chunk count of the BM25 statistics, and vectors.
    fn chunk_counts(&self, c: &Collection) -> Result<(usize, usize, usize)> {
        let sql = format!(
            "SELECT (SELECT count(*) FROM chunks WHERE collection_id = $1), \
             (SELECT chunk_count FROM collections WHERE id = $1), \
             (SELECT count(*) FROM {})",
            vec_table(c.id)
        );
        self.run("counting chunks", async |conn| {
            let (a, b, v): (i64, i64, i64) = sqlx::query_as(AssertSqlSafe(sql))
                .bind(c.id)
                .fetch_one(conn)
                .await?;
            Ok((a.max(0) as usize, b.max(0) as usize, v.max(0) as usize))
        })
    }

    fn keyword_ranking(
        &self,
        c: &Collection,
        words: &[String],
        filters: &Filters,
        limit: usize,
    ) -> Result<Vec<(i64, f64)>> {
        let (cond, values) = filter_sql(filters, 4);
        let sql = format!("{BM25_SQL}{cond}\nGROUP BY c.id ORDER BY score DESC, c.id LIMIT $3");
        self.run("keyword search", async |conn| {
            let mut q = sqlx::query_as::<_, (i64, f64)>(AssertSqlSafe(sql))
                .bind(c.id)
                .bind(words)
                .bind(to_i64(limit));
            for v in values {
                q = q.bind(v);
            }
            q.fetch_all(conn).await
        })
    }

    fn vector_ranking(
        &self,
        c: &Collection,
        vector: &[f32],
        filters: &Filters,
        limit: usize,
    ) -> Result<Vec<(i64, f64)>> {
        let table = vec_table(c.id);
        let (cond, values) = filter_sql(filters, 3);
        let sql = if filters.is_empty() {
            format!(
                "SELECT chunk_id, embedding <=> $1 FROM {table} ORDER BY embedding <=> $1 LIMIT $2"
            )
        } else {
            format!(
                "SELECT v.chunk_id, v.embedding <=> $1 FROM {table} v \
                 JOIN chunks c ON c.id = v.chunk_id JOIN documents d ON d.id = c.document_id \
                 WHERE true{cond} ORDER BY v.embedding <=> $1 LIMIT $2"
            )
        };
        // The HNSW search keeps `ef_search` candidates (40 by default): at least as many as
        // wanted; iterative scans go on past them when filters reject candidates.
        let ef_search = limit.clamp(40, 1000).to_string();
        let query = Vector::from(vector.to_vec());
        let pairs = self.run("vector search", async |conn| {
            let mut tx = conn.begin().await?;
            sqlx::query(
                "SELECT set_config('hnsw.ef_search', $1, true), \
                 set_config('hnsw.iterative_scan', 'strict_order', true)",
            )
            .bind(ef_search)
            .execute(&mut *tx)
            .await?;
            let mut q = sqlx::query_as::<_, (i64, f64)>(AssertSqlSafe(sql))
                .bind(query)
                .bind(to_i64(limit));
            for v in values {
                q = q.bind(v);
            }
            let pairs = q.fetch_all(&mut *tx).await?;
            tx.commit().await?;
            Ok(pairs)
        })?;
        Ok(pairs.into_iter().map(|(id, d)| (id, 1.0 - d)).collect())
    }

    fn hits(&self, c: &Collection, ids: &[i64], query: Option<&[f32]>) -> Result<Vec<Hit>> {
        let similarity = if query.is_some() {
            "1 - (v.embedding <=> $2)"
        } else {
            "NULL::float8"
        };
        let sql = format!(
            "SELECT c.id, d.path, d.title, c.section, c.page, c.kind, c.text, c.span_start, \
             c.span_end, {similarity}, COALESCE(d.date, d.mtime) FROM chunks c \
             JOIN documents d ON d.id = c.document_id \
             JOIN {} v ON v.chunk_id = c.id WHERE c.id = ANY($1)",
            vec_table(c.id)
        );
        let query = query.map(|q| Vector::from(q.to_vec()));
        let mut by_id: HashMap<i64, Hit> = self.run("reading chunks", async |conn| {
            let mut q = sqlx::query(AssertSqlSafe(sql)).bind(ids);
            if let Some(v) = query {
                q = q.bind(v);
            }
            let rows = q.fetch_all(conn).await?;
            rows.iter()
                .map(|r| {
                    let kind: String = r.try_get(5)?;
                    let start: Option<i64> = r.try_get(7)?;
                    let end: Option<i64> = r.try_get(8)?;
                    let page: Option<i32> = r.try_get(4)?;
                    let similarity: Option<f64> = r.try_get(9)?;
                    let id: i64 = r.try_get(0)?;
                    Ok((
                        id,
                        Hit {
                            chunk_id: id,
                            source: PathBuf::from(r.try_get::<String, _>(1)?),
                            title: r.try_get(2)?,
                            section: r.try_get(3)?,
                            page: page.and_then(|p| u32::try_from(p).ok()),
                            kind: ElementKind::parse(&kind).unwrap_or(ElementKind::Text),
                            text: r.try_get(6)?,
                            span: start
                                .zip(end)
                                .map(|(s, e)| s.max(0) as usize..e.max(0) as usize),
                            date: r.try_get(10)?,
                            score: 0.0,
                            bm25_rank: None,
                            vector_rank: None,
                            rerank_score: None,
                            similarity: similarity.map(|s| s as f32),
                        },
                    ))
                })
                .collect()
        })?;
        ids.iter()
            .map(|id| {
                by_id.remove(id).ok_or_else(|| {
                    self.server_error(format!(
                        "chunk {id} was removed while searching (the collection changed): \
                         search again"
                    ))
                })
            })
            .collect()
    }
}
