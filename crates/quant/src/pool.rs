//! The worker pool the quantized matmuls run on: persistent threads that spin briefly between
//! jobs (decode issues hundreds of small matmuls per token, microseconds apart) and park when
//! idle, with the calling thread working beside them, so a job costs no thread hand-off and no
//! allocation.
//!
//! A job is `tasks` calls of one closure, claimed one at a time through a single atomic word
//! (job generation, task count, next task), so a worker that wakes late finds nothing left to
//! claim and never touches a finished job; the caller runs whatever is left itself and waits only
//! for tasks already claimed by others. One job runs at a time: a caller that finds the pool
//! busy (another model on another thread, or a matmul inside a job) runs its tasks alone.

use std::cell::UnsafeCell;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, TryLockError};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// How long an idle worker busy-waits before yielding its core on every check: the gap between
/// back-to-back matmuls.
const SPIN: Duration = Duration::from_micros(30);
/// How long an idle worker keeps checking (yielding to any other runnable thread in between, such
/// as candle's own pool running the elementwise ops between matmuls) before parking: longer than
/// the gap between the matmuls of one decode step, short enough not to hold a core between steps.
const WAIT: Duration = Duration::from_micros(200);
/// Most tasks in one job (the task fields of the state word are 16 bits).
pub(crate) const MAX_TASKS: usize = 0xFFFF;

/// A job's closure with its lifetime erased; only dereferenced by a thread holding a claimed task
/// of the job's generation, which the job's caller waits for.
#[derive(Clone, Copy)]
struct JobRef(*const (dyn Fn(usize) + Sync));

struct Shared {
    /// `generation << 32 | tasks << 16 | next task`.
    state: AtomicU64,
    /// Tasks of the current job finished by workers.
    finished: AtomicUsize,
    /// Whether a worker's task of the current job panicked.
    panicked: AtomicBool,
    job: UnsafeCell<JobRef>,
}

// SAFETY: `job` is written only by the caller holding `Pool::busy` while no task of any job is
// claimable, and read only by threads that claimed a task of the job it holds (see `run`).
unsafe impl Sync for Shared {}
// SAFETY: as above; the pointer itself is plain data.
unsafe impl Send for Shared {}

/// A persistent pool of `threads() - 1` workers plus the caller.
pub(crate) struct Pool {
    shared: Arc<Shared>,
    workers: Vec<Thread>,
    busy: Mutex<()>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("threads", &self.threads())
            .finish()
    }
}

/// Threads to use: `RAYON_NUM_THREADS` when set (the variable candle's pools follow too, so one
/// setting limits every pool), else the CPUs this process may run on.
fn thread_count() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1)
}

impl Pool {
    /// The process-wide pool, started on first use.
    pub(crate) fn global() -> &'static Pool {
        static POOL: OnceLock<Pool> = OnceLock::new();
        POOL.get_or_init(|| Pool::new(thread_count()))
    }

    fn new(threads: usize) -> Pool {
        let noop: &'static (dyn Fn(usize) + Sync) = &|_| {};
        let shared = Arc::new(Shared {
            state: AtomicU64::new(0),
            finished: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            job: UnsafeCell::new(JobRef(noop)),
        });
        let workers = (1..threads)
            .filter_map(|i| {
                let shared = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("forja-quant-{i}"))
                    .spawn(move || worker(&shared))
                    .ok()
                    .map(|h| h.thread().clone())
            })
            .collect();
        Pool {
            shared,
            workers,
            busy: Mutex::new(()),
        }
    }

    /// Threads a job runs on, the caller included.
    pub(crate) fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Calls `f(0) … f(tasks - 1)`, spread over the pool; returns when all have returned. A
    /// panic in any task is raised here once every task has finished.
    pub(crate) fn run(&self, tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        if tasks <= 1 || tasks > MAX_TASKS || self.workers.is_empty() {
            (0..tasks).for_each(f);
            return;
        }
        // A panic raised by an earlier job poisons the lock but leaves the pool consistent.
        let _busy = match self.busy.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => {
                (0..tasks).for_each(f);
                return;
            }
        };
        let s = &*self.shared;
        let generation = (s.state.load(Ordering::Acquire) >> 32).wrapping_add(1) & 0xFFFF_FFFF;
        // SAFETY: erasing the lifetime is sound because `f` is dereferenced only by threads
        // holding a claimed task of this generation, and this function returns only after every
        // claimed task has finished. The write races with no read: the previous job's tasks
        // all finished before its `run` returned, and nothing of this generation is claimable
        // before the Release store below.
        unsafe {
            let erased: *const (dyn Fn(usize) + Sync + '_) = f;
            *s.job.get() = JobRef(std::mem::transmute::<
                *const (dyn Fn(usize) + Sync + '_),
                *const (dyn Fn(usize) + Sync + 'static),
            >(erased));
        }
        s.finished.store(0, Ordering::Relaxed);
        s.panicked.store(false, Ordering::Relaxed);
        s.state
            .store(generation << 32 | (tasks as u64) << 16, Ordering::Release);
        for w in &self.workers {
            w.unpark();
        }
        // The caller's own panic waits too: the workers may still be running `f`.
        let mut mine = 0;
        let mut own_panic = None;
        while let Some(i) = claim(s, generation) {
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| f(i))) {
                own_panic.get_or_insert(p);
            }
            mine += 1;
        }
        let mut spins = 0u32;
        while s.finished.load(Ordering::Acquire) + mine < tasks {
            spins += 1;
            if spins < 1 << 16 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        if let Some(p) = own_panic {
            resume_unwind(p);
        }
        if s.panicked.load(Ordering::Acquire) {
            panic!("a quantized matmul task panicked on a worker thread");
        }
    }
}

/// Claims the next task of `generation`, if that job still has one.
fn claim(s: &Shared, generation: u64) -> Option<usize> {
    let mut state = s.state.load(Ordering::Acquire);
    loop {
        let (next, tasks) = (state & 0xFFFF, (state >> 16) & 0xFFFF);
        if state >> 32 != generation || next >= tasks {
            return None;
        }
        match s
            .state
            .compare_exchange_weak(state, state + 1, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => return Some(next as usize),
            Err(now) => state = now,
        }
    }
}

fn worker(s: &Shared) {
    let mut seen = 0u64;
    loop {
        let idle_since = Instant::now();
        let mut spins = 0u32;
        let generation = loop {
            let state = s.state.load(Ordering::Acquire);
            let generation = state >> 32;
            if generation != seen {
                break generation;
            }
            spins = spins.wrapping_add(1);
            if !spins.is_multiple_of(64) {
                std::hint::spin_loop();
                continue;
            }
            let idle = idle_since.elapsed();
            if idle < SPIN {
                std::hint::spin_loop();
            } else if idle < WAIT {
                std::thread::yield_now();
            } else {
                // A job published after the load above unparks this thread: park returns at
                // once if that unpark came first.
                std::thread::park();
            }
        };
        seen = generation;
        while let Some(i) = claim(s, generation) {
            // SAFETY: this thread holds task `i` of `generation`, so the caller that published
            // the job waits in `run` until it finishes: the closure is alive, and the caller's
            // write of `job` happened before the Release store this thread's claim observed.
            let job = unsafe { *s.job.get() };
            // SAFETY: as above.
            if catch_unwind(AssertUnwindSafe(|| unsafe { (*job.0)(i) })).is_err() {
                s.panicked.store(true, Ordering::Release);
            }
            s.finished.fetch_add(1, Ordering::Release);
        }
    }
}
