//! The GGUF files forja writes read back through the `gguf` Python package (llama.cpp's own
//! reader, pinned in scripts/clients/requirements.txt and installed by scripts/fetch-testdata):
//! the same metadata, tensor names, types, shapes, and tensor bytes as forja's reader sees.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

mod common;

use forja_arch::GgufRecipe;
use forja_arch::gguf::GgufHeader;

const READER: &str = r#"
import json, sys
from gguf import GGUFReader
r = GGUFReader(sys.argv[1])
out = {"fields": {}, "tensors": []}
for name, f in r.fields.items():
    if name.startswith("GGUF."):
        continue
    v = f.contents()
    if isinstance(v, list) and len(v) > 8:
        v = {"len": len(v), "first": v[:3], "last": v[-1]}
    out["fields"][name] = v
for t in r.tensors:
    out["tensors"].append({"name": t.name, "type": int(t.tensor_type),
                           "shape": [int(d) for d in t.shape],
                           "offset": int(t.data_offset), "bytes": int(t.n_bytes)})
print(json.dumps(out))
"#;

#[test]
fn python_gguf_reads_what_forja_writes() {
    let python = forja_testkit::testdata_dir().join("pyclients/bin/python");
    assert!(
        python.is_file(),
        "missing {}: run scripts/fetch-testdata",
        python.display()
    );
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    std::fs::create_dir(&dir).unwrap();
    common::write_model(&dir, "qwen2", "BF16", 9);
    let out = tmp.path().join("m.gguf");
    forja_convert::quantize_folder(&dir, GgufRecipe::Q4KM, &out, &mut ()).unwrap();
    let run = std::process::Command::new(&python)
        .args(["-c", READER])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let py: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let ours = GgufHeader::read_path(&out).unwrap();
    let fields = &py["fields"];
    assert_eq!(fields["general.architecture"], "qwen2");
    assert_eq!(fields["general.file_type"], 15);
    assert_eq!(fields["qwen2.block_count"], common::LAYERS as u64);
    assert_eq!(
        fields["qwen2.attention.head_count_kv"],
        common::KV_HEADS as u64
    );
    assert_eq!(fields["tokenizer.ggml.tokens"]["len"], common::VOCAB as u64);
    assert_eq!(fields["tokenizer.ggml.tokens"]["last"], "[PAD263]");
    assert_eq!(
        fields["tokenizer.ggml.merges"],
        serde_json::json!(["h e", "l l"])
    );
    assert_eq!(fields["tokenizer.ggml.eos_token_id"], 259);
    assert!(
        fields["tokenizer.chat_template"]
            .as_str()
            .unwrap()
            .contains("im_start")
    );
    assert_eq!(fields.as_object().unwrap().len(), ours.metadata.len());
    let tensors = py["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), ours.tensors.len());
    let file = std::fs::read(&out).unwrap();
    for (p, o) in tensors.iter().zip(&ours.tensors) {
        assert_eq!(p["name"], o.name.as_str());
        assert_eq!(p["type"], u64::from(o.ggml_type.id()), "{}", o.name);
        let dims: Vec<u64> = p["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap())
            .collect();
        assert_eq!(dims, o.dims, "{}", o.name);
        assert_eq!(p["bytes"], o.data_bytes, "{}", o.name);
        assert_eq!(p["offset"], ours.data_offset + o.offset, "{}", o.name);
        assert!((ours.data_offset + o.offset + o.data_bytes) as usize <= file.len());
    }
}
