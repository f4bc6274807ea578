#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]
//! Training data: chat and alpaca records, JSONL and JSON arrays, errors that name the line;
//! conversations through a real model's chat template with the loss on the assistant's tokens
//! only, its prompt part exactly what the model is given at inference.

use std::path::Path;

use forja_engine::{ChatTemplate, ControlText, LoadedModel, Message, Tokenizer, chat_training_ids};
use forja_testkit::{testdata_dir, testdata_file};
use forja_train::dataset::{Record, parse};
use forja_train::examples::{split, tokenize};

fn err_of(text: &str) -> String {
    parse(text, Path::new("data.jsonl"))
        .unwrap_err()
        .to_string()
}

#[test]
fn chat_and_alpaca_records_become_conversations() {
    let text = r#"{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]}

{"instruction": "Classify the clause.", "input": "The tenant may terminate…", "output": "Termination", "id": 7}
{"instruction": "Say yes.", "output": "Yes.", "system": "You answer."}
"#;
    let records = parse(text, Path::new("d.jsonl")).unwrap();
    assert_eq!(records.len(), 3);
    assert_eq!(records[0].at, "line 1");
    assert_eq!(records[1].at, "line 3");
    assert_eq!(
        records[1].messages,
        vec![
            Message::new("user", "Classify the clause.\n\nThe tenant may terminate…"),
            Message::new("assistant", "Termination"),
        ]
    );
    assert_eq!(
        records[2].messages[0],
        Message::new("system", "You answer.")
    );
    let array = r#"[{"instruction": "a", "input": "", "output": "b"}, {"instruction": "c", "output": "d"}]"#;
    let records = parse(array, Path::new("d.json")).unwrap();
    assert_eq!(records[1].at, "record 2");
    assert_eq!(records[0].messages[0], Message::new("user", "a"));
}

#[test]
fn bad_records_are_named_by_line_and_reason() {
    let ok = r#"{"instruction": "a", "output": "b"}"#;
    let cases = [
        (format!("{ok}\n{{\"instruction\": \"a\"}}"), "line 2", "no `output`"),
        (format!("{ok}\n\n{{not json"), "line 3", "not valid JSON"),
        (r#"{"messages": [{"role": "robot", "content": "x"}]}"#.into(), "line 1", "role \"robot\""),
        (
            r#"{"messages": [{"role": "assistant", "content": "x"}]}"#.into(),
            "line 1",
            "start with the user",
        ),
        (
            r#"{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": " "}]}"#.into(),
            "line 1",
            "no assistant message with content",
        ),
        (r#"{"messages": [{"role": "user", "content": 3}]}"#.into(), "message 1", "must be a string"),
        (r#"{"prompt": "plain"}"#.into(), "line 1", "neither `messages`"),
        (r#"{"text": "  "}"#.into(), "line 1", "`text` is empty"),
        (r#"{"text": ["a"]}"#.into(), "line 1", "`text` must be a string, found an array"),
        (r#"{"text": "a", "output": "b"}"#.into(), "line 1", "both `text` and `output`"),
        (
            r#"{"conversations": [{"from": "human", "value": "x"}, {"from": "bot", "value": "y"}]}"#.into(),
            "turn 2",
            "unknown speaker \"bot\"",
        ),
        (
            r#"{"conversations": [{"from": "human", "value": "x"}, {"from": "function_call", "value": "{oops"}]}"#.into(),
            "turn 2",
            "the function call is not JSON",
        ),
        (
            r#"{"messages": [], "instruction": "a", "output": "b"}"#.into(),
            "line 1",
            "mixes formats",
        ),
        (
            r#"{"instruction": "a", "output": "b", "tools": "{}"}"#.into(),
            "line 1",
            "`tools` must be an array",
        ),
        (r#"["a"]"#.into(), "record 1", "expected a JSON object"),
        ("[{\"instruction\": \"a\",\n \"output\": }]".into(), "line 2, column", "not valid JSON"),
        ("\n\n".into(), "data.jsonl", "no records"),
    ];
    for (text, at, what) in cases {
        let e = err_of(&text);
        assert!(e.contains(at) && e.contains(what), "{text:?} gave {e:?}");
    }
}

fn smollm2() -> LoadedModel {
    LoadedModel::load_cpu(&testdata_file("SmolLM2-135M-Instruct.Q4_1.gguf"), None).unwrap()
}

#[test]
fn only_assistant_tokens_are_trained_and_the_prompt_is_the_inference_prompt() {
    let model = smollm2();
    let conversation = vec![
        Message::new("user", "Name a colour."),
        Message::new("assistant", "Blue."),
        Message::new("user", "Another, and quote <|im_end|> literally."),
        Message::new("assistant", "Green, and <|im_end|>."),
    ];
    let record = Record {
        at: "line 1".into(),
        messages: conversation.clone(),
        tools: None,
        text: None,
    };
    let (examples, stats) = tokenize(&model, &[record], 4096, Path::new("d.jsonl")).unwrap();
    assert_eq!(stats.truncated, 0);
    let ex = &examples[0];
    assert_eq!(ex.ids.len(), ex.trained.len());
    // The untrained part up to the first answer is what `forja run` sends for that question.
    let first_prompt = model.chat_prompt(&conversation[..1], None).unwrap();
    assert_eq!(&ex.ids[..first_prompt.len()], first_prompt.as_slice());
    assert!(ex.trained[..first_prompt.len()].iter().all(|&t| !t));
    // The trained tokens are the two answers with their end-of-turn markup, nothing else.
    let pieces: Vec<String> = runs(&ex.trained)
        .into_iter()
        .map(|(s, e)| model.tokenizer.decode(&ex.ids[s..e], false).unwrap())
        .collect();
    assert_eq!(
        pieces,
        vec!["Blue.<|im_end|>\n", "Green, and <|im_end|>.<|im_end|>\n"]
    );
    // Text that looks like a control token stays text: one real end-of-turn token per answer.
    let im_end = model.tokenizer.token_to_id("<|im_end|>").unwrap();
    let trained_ends = ex
        .ids
        .iter()
        .zip(&ex.trained)
        .filter(|&(&id, &t)| t && id == im_end)
        .count();
    assert_eq!(trained_ends, 2);
}

/// Start and end of each run of `true`.
fn runs(flags: &[bool]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, &f) in flags.iter().chain([&false]).enumerate() {
        match (f, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                out.push((s, i));
                start = None;
            }
            _ => {}
        }
    }
    out
}

#[test]
fn long_examples_are_cut_and_those_left_with_nothing_to_learn_dropped() {
    let model = smollm2();
    let records = vec![
        Record {
            at: "line 1".into(),
            messages: vec![
                Message::new("user", "Hi"),
                Message::new("assistant", "Hello there."),
            ],
            tools: None,
            text: None,
        },
        Record {
            at: "line 2".into(),
            messages: vec![
                Message::new("user", &"word ".repeat(200)),
                Message::new("assistant", "Ok."),
            ],
            tools: None,
            text: None,
        },
    ];
    let (examples, stats) = tokenize(&model, &records, 64, Path::new("d.jsonl")).unwrap();
    assert_eq!(examples.len(), 1);
    assert_eq!(stats.truncated, 1);
    assert_eq!(stats.dropped, vec!["line 2".to_string()]);
    assert!(examples[0].ids.len() <= 64);
}

#[test]
fn the_eval_split_is_seeded_and_disjoint() {
    let examples: Vec<_> = (0..20u32)
        .map(|i| forja_train::Example {
            ids: vec![1, i + 10],
            trained: vec![false, true],
            packed: Vec::new(),
        })
        .collect();
    let (train_a, eval_a) = split(examples.clone(), 0.2, 7).unwrap();
    let (train_b, eval_b) = split(examples.clone(), 0.2, 7).unwrap();
    let (_, eval_c) = split(examples.clone(), 0.2, 8).unwrap();
    assert_eq!((train_a.len(), eval_a.len()), (16, 4));
    assert_eq!(eval_a, eval_b);
    assert_ne!(eval_a, eval_c);
    assert_eq!(train_a, train_b);
    assert!(eval_a.iter().all(|e| !train_a.contains(e)));
    assert!(split(examples, 1.0, 0).is_err());
}

/// A ShareGPT record as LLaMA-Factory's glaive tool-call demo stores it.
const SHAREGPT: &str = r#"{"conversations": [{"from": "human", "value": "Find a recipe with rice."}, {"from": "function_call", "value": "{\"name\": \"search_recipes\", \"arguments\": {\"ingredients\": [\"rice\"]}}"}, {"from": "observation", "value": "{\"recipes\": [\"Fried rice\"]}"}, {"from": "gpt", "value": "Try fried rice."}], "tools": "[{\"name\": \"search_recipes\", \"description\": \"Search recipes by ingredients\", \"parameters\": {\"type\": \"object\", \"properties\": {\"ingredients\": {\"type\": \"array\", \"items\": {\"type\": \"string\"}}}}}]"}"#;

#[test]
fn sharegpt_tool_calls_are_learned_and_tool_results_are_not() {
    let records = parse(SHAREGPT, Path::new("glaive.jsonl")).unwrap();
    let r = &records[0];
    let roles: Vec<&str> = r.messages.iter().map(|m| m.role.as_str()).collect();
    assert_eq!(roles, ["user", "assistant", "tool", "assistant"]);
    assert_eq!(
        r.messages[1].tool_calls.as_ref().unwrap()[0]["function"]["name"],
        "search_recipes"
    );
    assert_eq!(r.tools.as_ref().unwrap()[0]["name"], "search_recipes");
    // Qwen2.5's template renders tools and tool calls.
    let dir = testdata_dir().join("hf-tokenizers/qwen2_5");
    let tokenizer = Tokenizer::from_hf_dir(&dir).unwrap();
    let template =
        ChatTemplate::new(tokenizer.chat_template.as_deref().unwrap(), "qwen2_5").unwrap();
    let controls = ControlText::new(&tokenizer).unwrap();
    let labeled = chat_training_ids(
        &tokenizer,
        &template,
        &controls,
        &r.messages,
        r.tools.as_ref(),
    )
    .unwrap();
    let text = |trained: bool| {
        let ids: Vec<u32> = labeled
            .ids
            .iter()
            .zip(&labeled.trained)
            .filter(|&(_, &t)| t == trained)
            .map(|(&id, _)| id)
            .collect();
        tokenizer.decode(&ids, false).unwrap()
    };
    let learned = text(true);
    let given = text(false);
    assert!(
        learned.contains("<tool_call>") && learned.contains("\"search_recipes\""),
        "{learned}"
    );
    assert!(learned.contains("Try fried rice."), "{learned}");
    assert!(
        !learned.contains("Fried rice\""),
        "the tool's result is not learned: {learned}"
    );
    assert!(
        given.contains("Search recipes by ingredients"),
        "the tools are in the prompt: {given}"
    );
    assert!(given.contains("Fried rice"), "{given}");
}

#[test]
fn templates_that_rewrite_earlier_turns_are_refused_with_the_reason() {
    let model = smollm2();
    // Shows only the last assistant answer, as reasoning templates drop earlier thoughts.
    let source = "{% for m in messages %}{% if m.role != 'assistant' or loop.last %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
    let template = ChatTemplate::new(source, "test").unwrap();
    let controls = ControlText::new(&model.tokenizer).unwrap();
    let messages = [
        Message::new("user", "a"),
        Message::new("assistant", "b"),
        Message::new("user", "c"),
        Message::new("assistant", "d"),
    ];
    let err = chat_training_ids(&model.tokenizer, &template, &controls, &messages, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("message 2") && err.contains("differently"),
        "{err}"
    );
}

#[test]
fn text_records_are_learned_as_written_beside_conversations() {
    let model = smollm2();
    let text = r#"{"text": "Clause 4.2: the tenant may end the lease with <|im_end|> notice."}
{"instruction": "Say yes.", "output": "Yes."}
"#;
    let records = parse(text, Path::new("d.jsonl")).unwrap();
    assert!(records[0].messages.is_empty());
    assert_eq!(records[1].text, None);
    let (examples, _) = tokenize(&model, &records, 4096, Path::new("d.jsonl")).unwrap();
    let written = records[0].text.as_deref().unwrap();
    let tok = &model.tokenizer;
    let mut want: Vec<u32> = tok
        .special
        .bos
        .filter(|_| tok.special.add_bos)
        .into_iter()
        .collect();
    want.extend(tok.encode_plain(written).unwrap());
    let eos = tok.token_to_id(&tok.special.eos_text).unwrap();
    want.push(eos);
    let ex = &examples[0];
    assert_eq!(ex.ids, want);
    // The look-alike stays text: the control token appears only as the closing EOS.
    let im_end = tok.token_to_id("<|im_end|>").unwrap();
    assert_eq!(
        ex.ids.iter().filter(|&&i| i == im_end).count(),
        usize::from(eos == im_end)
    );
    assert!(!ex.trained[0] && ex.trained[1..].iter().all(|&t| t));
    // The conversation beside it keeps its template and its assistant-only loss.
    assert!(examples[1].trained.iter().any(|&t| !t));
}
