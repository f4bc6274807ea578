//! The embedding actor over the tiny BERT (fixtures/tiny/bert): requests queued together share
//! forward passes and get what they get alone, a bad request fails alone, a full queue refuses.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Barrier};

use forja_engine::embed_serving::{EmbedEngine, EmbedServingConfig, EmbedSink};
use forja_engine::serving::SubmitError;
use forja_engine::{Embedder, Embeddings, EngineError};
use forja_testkit::vectors::max_abs_diff;

struct ToChannel(Sender<forja_engine::Result<Embeddings>>);

impl EmbedSink for ToChannel {
    fn send(self: Box<Self>, result: forja_engine::Result<Embeddings>) {
        let _ = self.0.send(result);
    }
}

/// A request that holds the actor — while it is still counted as pending — until the test lets
/// it go: the actor asks whether its requester left before working on it.
struct Gate(Arc<Barrier>, Sender<forja_engine::Result<Embeddings>>);

impl EmbedSink for Gate {
    fn send(self: Box<Self>, result: forja_engine::Result<Embeddings>) {
        let _ = self.1.send(result);
    }

    fn is_closed(&self) -> bool {
        self.0.wait();
        false
    }
}

fn embedder() -> Arc<Embedder> {
    let dir = forja_testkit::fixtures_dir().join("tiny").join("bert");
    Arc::new(Embedder::load_cpu(&dir).unwrap())
}

fn submit(
    engine: &EmbedEngine,
    texts: &[&str],
    truncate: bool,
) -> Receiver<forja_engine::Result<Embeddings>> {
    let (tx, rx) = channel();
    let inputs = texts.iter().map(|t| t.to_string()).collect();
    engine
        .submit(inputs, truncate, Box::new(ToChannel(tx)))
        .unwrap();
    rx
}

#[test]
fn queued_requests_share_a_turn_and_a_bad_one_fails_alone() {
    let embedder = embedder();
    let (engine, _thread) =
        EmbedEngine::start(Arc::clone(&embedder), &EmbedServingConfig::default()).unwrap();
    // Hold the actor in its first answer so the next requests queue up and run in one turn.
    let gate = Arc::new(Barrier::new(2));
    let (tx, first) = channel();
    engine
        .submit(
            vec!["hold".into()],
            false,
            Box::new(Gate(Arc::clone(&gate), tx)),
        )
        .unwrap();
    let long = "cat ".repeat(100);
    let requests: Vec<Vec<&str>> = vec![
        vec!["the cat sat on the mat", "a dog"],
        vec![&long],
        vec!["hello world", "one more sentence here", "x"],
    ];
    let receivers: Vec<_> = requests.iter().map(|r| submit(&engine, r, false)).collect();
    assert_eq!(engine.pending(), 4);
    gate.wait();
    assert!(first.recv().unwrap().is_ok());
    for (texts, rx) in requests.iter().zip(receivers) {
        let got = rx.recv().unwrap();
        if texts[0] == long {
            let err = got.unwrap_err();
            assert!(matches!(err, EngineError::Input(_)), "{err}");
            assert!(err.to_string().contains("64"), "{err}");
            continue;
        }
        let got = got.unwrap();
        let alone = embedder.embed(texts, false).unwrap();
        assert_eq!(got.prompt_tokens, alone.prompt_tokens);
        assert_eq!(got.vectors.len(), texts.len());
        for (a, b) in got.vectors.iter().zip(&alone.vectors) {
            assert!(max_abs_diff(a, b) <= 1e-5);
        }
    }
    // With truncation the long input runs.
    let cut = submit(&engine, &[&long], true).recv().unwrap().unwrap();
    assert_eq!(cut.prompt_tokens, embedder.max_tokens());
    assert_eq!(engine.pending(), 0);
}

#[test]
fn a_full_queue_refuses_and_empty_requests_are_invalid() {
    let (engine, _thread) = EmbedEngine::start(
        embedder(),
        &EmbedServingConfig {
            max_pending: 2,
            ..EmbedServingConfig::default()
        },
    )
    .unwrap();
    let gate = Arc::new(Barrier::new(2));
    let (tx, first) = channel();
    engine
        .submit(
            vec!["hold".into()],
            false,
            Box::new(Gate(Arc::clone(&gate), tx)),
        )
        .unwrap();
    let queued = submit(&engine, &["queued"], false);
    let (tx, _rx) = channel();
    let refused = engine.submit(vec!["third".into()], false, Box::new(ToChannel(tx)));
    assert!(
        matches!(refused, Err(SubmitError::Overloaded(2))),
        "{refused:?}"
    );
    let (tx, _rx) = channel();
    let empty = engine.submit(Vec::new(), false, Box::new(ToChannel(tx)));
    assert!(matches!(empty, Err(SubmitError::Invalid(_))), "{empty:?}");
    gate.wait();
    assert!(first.recv().unwrap().is_ok());
    assert!(queued.recv().unwrap().is_ok());
    assert_eq!(engine.pending(), 0);
}

#[test]
fn the_actor_ends_with_its_last_handle() {
    let (engine, thread) = EmbedEngine::start(embedder(), &EmbedServingConfig::default()).unwrap();
    assert!(submit(&engine, &["a"], false).recv().unwrap().is_ok());
    drop(engine);
    thread.join().unwrap();
}
