//! Wire types of forja's HTTP API. Requests are strict: an unknown field or a wrong type is an
//! error that names it, so a client's typo never passes silently.

pub mod embeddings;
pub mod ollama;
pub mod openai;
pub mod rag;
