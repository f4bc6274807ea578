#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]
//! import, cp, rm and lookups on a real store folder.

use forja_store::{Store, StoreConfig, StoreError};
use forja_testkit::gguf_builder::GgufBuilder;

#[test]
fn import_copy_and_remove_keep_files_while_a_name_uses_them() {
    let home = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("Tiny-Llama.Q8_0.gguf");
    let bytes = GgufBuilder::tiny_llama().bytes();
    std::fs::write(&file, &bytes).unwrap();
    let store = Store::open(StoreConfig::at(home.path(), "http://127.0.0.1:9")).unwrap();

    let e = store.import(&file, None).unwrap();
    assert_eq!(e.name, "tiny-llama.q8_0");
    assert!(e.path.starts_with(home.path().join("models")));
    assert_eq!(std::fs::read(&e.path).unwrap(), bytes);
    assert_eq!(e.arch, "llama");
    assert_eq!(e.context, 2048);
    assert_eq!(e.size_bytes, bytes.len() as u64);
    assert_eq!(e.files[0].sha256.as_ref().unwrap().len(), 64);
    assert!(e.source.starts_with("import:"));
    // Only the finished folder is there: no temporary leftovers.
    let names: Vec<String> = std::fs::read_dir(home.path().join("models"))
        .unwrap()
        .map(|d| d.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["tiny-llama.q8_0".to_string()]);

    let err = store.import(&file, None).unwrap_err();
    assert!(matches!(err, StoreError::NameTaken { .. }), "{err}");

    let alias = store.copy("tiny-llama.q8_0", "tiny").unwrap();
    assert_eq!(alias.path, e.path);
    assert_eq!(store.list().unwrap().len(), 2);

    let gone = store.remove("tiny-llama.q8_0").unwrap();
    assert_eq!(gone.freed_bytes, 0, "the alias still uses the files");
    assert!(e.path.is_file());
    let gone = store.remove("tiny").unwrap();
    assert_eq!(gone.freed_bytes, bytes.len() as u64);
    assert!(!e.path.exists());
    assert!(store.list().unwrap().is_empty());

    let err = store.remove("tiny").unwrap_err();
    assert!(err.to_string().contains("the store is empty"), "{err}");
}

#[test]
fn importing_something_that_is_not_a_model_copies_nothing() {
    let home = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("notes.gguf");
    std::fs::write(&file, b"hello, not a model").unwrap();
    let store = Store::open(StoreConfig::at(home.path(), "http://127.0.0.1:9")).unwrap();
    let err = store.import(&file, Some("notes")).unwrap_err();
    assert!(err.to_string().contains("not a GGUF file"), "{err}");
    assert!(store.list().unwrap().is_empty());
    assert!(!home.path().join("models").join("notes").exists());
}
