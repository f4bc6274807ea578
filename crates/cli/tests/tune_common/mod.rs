#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]
//! What the `forja tune` tests share: running the binary, and a small set of training records
//! (chat and alpaca) classifying contract clauses.

use std::process::{Command, Output};

/// `forja ARGS`, logging off.
pub fn forja(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_forja"))
        .args(args)
        .env("FORJA_LOG", "off")
        .output()
        .unwrap()
}

/// Output bytes as text (lossy).
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub const DATA: &str = r#"{"messages": [{"role": "user", "content": "Classify: the tenant may end the lease with 30 days notice."}, {"role": "assistant", "content": "Termination"}]}
{"messages": [{"role": "user", "content": "Classify: neither party is liable for indirect damages."}, {"role": "assistant", "content": "Limitation of liability"}]}
{"instruction": "Classify the clause.", "input": "This agreement is governed by the laws of Spain.", "output": "Governing law"}
{"instruction": "Classify the clause.", "input": "The supplier keeps all intellectual property.", "output": "IP ownership"}
{"instruction": "Classify the clause.", "input": "Either party may terminate for material breach.", "output": "Termination"}
{"instruction": "Classify the clause.", "input": "Disputes go to arbitration in Madrid.", "output": "Dispute resolution"}
"#;
