//! The embedding actor: one thread per embedding model. Requests queue on a bounded channel; each
//! turn takes every request waiting (up to a bound of inputs), checks and tokenizes each one —
//! a bad request fails alone — and runs all their inputs through the encoder together, so many
//! small concurrent requests share forward passes the way one large request does.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;

use crate::embed::{Embedder, Embeddings, Prepared};
use crate::error::{EngineError, Result};
use crate::serving::SubmitError;

/// Where a request's vectors go.
pub trait EmbedSink: Send {
    /// Delivers the result.
    fn send(self: Box<Self>, result: Result<Embeddings>);
    /// The requester went away: skip the work.
    fn is_closed(&self) -> bool {
        false
    }
}

/// How an embedding model serves.
#[derive(Debug, Clone)]
pub struct EmbedServingConfig {
    /// Requests queued or running before new ones are refused as overloaded.
    pub max_pending: usize,
    /// Inputs one turn gathers from waiting requests (a single larger request still runs whole).
    pub max_inputs_per_turn: usize,
}

impl Default for EmbedServingConfig {
    fn default() -> Self {
        EmbedServingConfig {
            max_pending: 256,
            max_inputs_per_turn: 256,
        }
    }
}

struct Job {
    inputs: Vec<String>,
    truncate: bool,
    sink: Box<dyn EmbedSink>,
}

/// A handle on a running embedding model; clones share it. The thread ends when the last
/// handle is dropped.
#[derive(Clone)]
pub struct EmbedEngine {
    pub embedder: Arc<Embedder>,
    tx: SyncSender<Job>,
    pending: Arc<AtomicUsize>,
    max_pending: usize,
}

impl std::fmt::Debug for EmbedEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbedEngine")
            .field("pending", &self.pending())
            .finish()
    }
}

impl EmbedEngine {
    /// Starts the actor thread of `embedder`.
    pub fn start(
        embedder: Arc<Embedder>,
        config: &EmbedServingConfig,
    ) -> std::io::Result<(Self, JoinHandle<()>)> {
        let max_pending = config.max_pending.max(1);
        let (tx, rx) = sync_channel(max_pending);
        let pending = Arc::new(AtomicUsize::new(0));
        let worker = Worker {
            embedder: Arc::clone(&embedder),
            rx,
            pending: Arc::clone(&pending),
            max_inputs: config.max_inputs_per_turn.max(1),
        };
        let thread = std::thread::Builder::new()
            .name("forja-embed".into())
            .spawn(move || worker.run())?;
        Ok((
            EmbedEngine {
                embedder,
                tx,
                pending,
                max_pending,
            },
            thread,
        ))
    }

    /// Requests queued or running.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::SeqCst)
    }

    /// Queues the embedding of `inputs`; the result goes to `sink`. Inputs longer than the
    /// model reads fail the request unless `truncate`.
    pub fn submit(
        &self,
        inputs: Vec<String>,
        truncate: bool,
        sink: Box<dyn EmbedSink>,
    ) -> std::result::Result<(), SubmitError> {
        if inputs.is_empty() {
            return Err(SubmitError::Invalid("no input to embed".into()));
        }
        let queued = self.pending.fetch_add(1, Ordering::SeqCst);
        if queued >= self.max_pending {
            self.pending.fetch_sub(1, Ordering::SeqCst);
            return Err(SubmitError::Overloaded(queued));
        }
        let job = Job {
            inputs,
            truncate,
            sink,
        };
        match self.tx.try_send(job) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.pending.fetch_sub(1, Ordering::SeqCst);
                Err(match e {
                    TrySendError::Full(_) => SubmitError::Overloaded(queued),
                    TrySendError::Disconnected(_) => SubmitError::Stopped,
                })
            }
        }
    }
}

struct Worker {
    embedder: Arc<Embedder>,
    rx: Receiver<Job>,
    pending: Arc<AtomicUsize>,
    max_inputs: usize,
}

impl Worker {
    fn run(self) {
        while let Ok(first) = self.rx.recv() {
            let mut jobs = vec![first];
            let mut inputs = jobs[0].inputs.len();
            while inputs < self.max_inputs {
                match self.rx.try_recv() {
                    Ok(job) => {
                        inputs += job.inputs.len();
                        jobs.push(job);
                    }
                    Err(_) => break,
                }
            }
            self.turn(jobs);
        }
    }

    /// Tokenizes each job (failing it alone on bad input), then embeds all of them at once.
    fn turn(&self, jobs: Vec<Job>) {
        let mut ready: Vec<(Box<dyn EmbedSink>, Prepared)> = Vec::new();
        for job in jobs {
            if job.sink.is_closed() {
                self.done(None);
                continue;
            }
            let refs: Vec<&str> = job.inputs.iter().map(String::as_str).collect();
            match self.embedder.prepare(&refs, job.truncate) {
                Ok(p) => ready.push((job.sink, p)),
                Err(e) => self.done(Some((job.sink, Err(e)))),
            }
        }
        if ready.is_empty() {
            return;
        }
        let all: Vec<&Prepared> = ready.iter().map(|(_, p)| p).collect();
        // A panic inside the model fails this turn's requests, not the actor.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.embedder.embed_prepared(&all)
        }))
        .unwrap_or_else(|_| Err(EngineError::Failed("it panicked on this batch".into())));
        match result {
            Ok(per_job) => {
                for ((sink, _), e) in ready.into_iter().zip(per_job) {
                    self.done(Some((sink, Ok(e))));
                }
            }
            Err(e) => {
                let message = e.to_string();
                for (sink, _) in ready {
                    self.done(Some((sink, Err(EngineError::Failed(message.clone())))));
                }
            }
        }
    }

    /// Counts a request out, then answers it: a caller that sees its answer sees the queue
    /// without it.
    fn done(&self, answer: Option<(Box<dyn EmbedSink>, Result<Embeddings>)>) {
        self.pending.fetch_sub(1, Ordering::SeqCst);
        if let Some((sink, result)) = answer {
            sink.send(result);
        }
    }
}
