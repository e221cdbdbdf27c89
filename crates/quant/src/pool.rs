//! A small thread pool for the matmuls: `threads - 1` workers plus the calling thread.
//!
//! A decode step runs a few hundred matmuls of tens of microseconds each, so waking
//! workers must cost far less than that: after a job, workers spin on an epoch counter
//! for a short while (`spin`, yielding the core every few microseconds to any other
//! thread ready to run on it) before they sleep on a condition variable, and the caller
//! only touches the condition variable when some worker is asleep. Nothing here reads
//! /proc or asks the OS for the CPU count per call (candle's CPU matmul does, unless
//! RAYON_NUM_THREADS is set).
//!
//! `run(f)` calls `f(0)` on the caller and `f(i)` on each worker `i` that joins the job
//! while it is open; it closes the job when the caller's `f(0)` returns and then waits
//! only for the workers inside `f`. So `f` must share its work out dynamically (an
//! atomic task counter, [`ThreadPool::for_each_chunk`]): a worker that the OS has not
//! scheduled yet (a loaded machine) then costs nothing, where a barrier would wait for
//! it. Concurrent `run` calls from different threads are serialized.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A job's closure with its lifetime erased (see the SAFETY note in [`ThreadPool::run`]),
/// and the epoch it was posted in.
#[derive(Clone, Copy)]
struct Job(*const (dyn Fn(usize) + Sync), u64);
// SAFETY: the closure is `Sync` and only called while `run` keeps it alive.
unsafe impl Send for Job {}

struct Shared {
    epoch: AtomicU64,
    /// The open job; workers join it under this lock, the caller closes it under it.
    job: Mutex<Option<Job>>,
    /// Workers inside the current job's closure.
    active: AtomicUsize,
    sleeping: AtomicUsize,
    sleep: Mutex<()>,
    wake: Condvar,
    stop: AtomicBool,
    panicked: AtomicBool,
    spin: Duration,
}

/// Worker threads for the CPU matmuls.
pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    dispatch: Mutex<()>,
}

impl ThreadPool {
    /// A pool running jobs on `threads` threads (the caller and `threads - 1` workers);
    /// idle workers spin for `spin` before sleeping. `threads` is at least 1.
    pub fn new(threads: usize, spin: Duration) -> std::io::Result<ThreadPool> {
        let shared = Arc::new(Shared {
            epoch: AtomicU64::new(0),
            job: Mutex::new(None),
            active: AtomicUsize::new(0),
            sleeping: AtomicUsize::new(0),
            sleep: Mutex::new(()),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
            spin,
        });
        let mut pool = ThreadPool {
            shared: shared.clone(),
            workers: Vec::new(),
            dispatch: Mutex::new(()),
        };
        for i in 1..threads.max(1) {
            let s = shared.clone();
            let h = std::thread::Builder::new()
                .name(format!("quant-matmul-{i}"))
                .spawn(move || worker(&s, i))?;
            pool.workers.push(h);
        }
        Ok(pool)
    }

    /// Threads a job runs on (workers + the caller).
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Call `f(0)` on the caller and `f(i)` on each worker `i` that joins before `f(0)`
    /// returns (see the module docs: `f` must share its work dynamically), then wait for
    /// the workers inside `f`. A panic in `f` on any thread is re-raised here.
    pub fn run(&self, f: &(dyn Fn(usize) + Sync)) {
        if self.workers.is_empty() {
            return f(0);
        }
        let _one_job_at_a_time = self.dispatch.lock().unwrap_or_else(|e| e.into_inner());
        let s = &self.shared;
        // SAFETY: workers call the erased closure only after joining the job under the
        // `job` lock while it is open, and this function closes the job under that lock
        // and then waits until no joined worker is left inside (`active` == 0) before it
        // returns or unwinds, so `f` outlives every call.
        let ptr = unsafe {
            std::mem::transmute::<*const (dyn Fn(usize) + Sync + '_), *const (dyn Fn(usize) + Sync)>(
                f,
            )
        };
        let epoch = s.epoch.load(SeqCst) + 1;
        *s.job.lock().unwrap_or_else(|e| e.into_inner()) = Some(Job(ptr, epoch));
        s.epoch.store(epoch, SeqCst);
        if s.sleeping.load(SeqCst) > 0 {
            let _g = s.sleep.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
        let mine = catch_unwind(AssertUnwindSafe(|| f(0)));
        *s.job.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let mut spins = 0u32;
        while s.active.load(Acquire) != 0 {
            spins = spins.saturating_add(1);
            match spins < 1 << 16 {
                true => std::hint::spin_loop(),
                false => std::thread::yield_now(),
            }
        }
        if let Err(p) = mine {
            std::panic::resume_unwind(p);
        }
        if s.panicked.swap(false, SeqCst) {
            panic!("a matmul worker thread panicked");
        }
    }
}

/// Wait for an epoch other than `seen` (spin, then sleep); None when stopping.
fn next_epoch(s: &Shared, seen: u64) -> Option<u64> {
    let start = Instant::now();
    let mut n = 0u32;
    loop {
        if s.stop.load(Acquire) {
            return None;
        }
        let e = s.epoch.load(Acquire);
        if e != seen {
            return Some(e);
        }
        n = n.wrapping_add(1);
        if !n.is_multiple_of(256) {
            std::hint::spin_loop();
            continue;
        }
        if start.elapsed() < s.spin {
            // Every few microseconds of spinning, let another thread that is ready on
            // this core run (the ops between two matmuls, e.g. candle's or the kernels'
            // threads), so that the spin costs them nothing on a machine with no core
            // to spare.
            std::thread::yield_now();
            continue;
        }
        let mut g = s.sleep.lock().unwrap_or_else(|e| e.into_inner());
        s.sleeping.fetch_add(1, SeqCst);
        while s.epoch.load(SeqCst) == seen && !s.stop.load(SeqCst) {
            g = s.wake.wait(g).unwrap_or_else(|e| e.into_inner());
        }
        s.sleeping.fetch_sub(1, SeqCst);
    }
}

fn worker(s: &Shared, index: usize) {
    let mut seen = 0;
    while let Some(e) = next_epoch(s, seen) {
        seen = e;
        // Join the job if it is still the one of this epoch and still open.
        let joined = {
            let job = s.job.lock().unwrap_or_else(|e| e.into_inner());
            match *job {
                Some(Job(f, epoch)) if epoch == e => {
                    s.active.fetch_add(1, SeqCst);
                    Some(f)
                }
                _ => None,
            }
        };
        if let Some(f) = joined {
            // SAFETY: see `run`: joined under the lock while open, so the closure is
            // alive until `active` drops back to 0.
            let r = catch_unwind(AssertUnwindSafe(|| unsafe { (*f)(index) }));
            if r.is_err() {
                s.panicked.store(true, SeqCst);
            }
            s.active.fetch_sub(1, Release);
        }
    }
}

impl ThreadPool {
    /// Call `f(i, chunk)` for every `chunk`-element piece of `data` (the last may be
    /// shorter), the pieces shared out among the threads as they come free.
    pub fn for_each_chunk<T: Send>(
        &self,
        data: &mut [T],
        chunk: usize,
        f: &(dyn Fn(usize, &mut [T]) + Sync),
    ) {
        let pieces = std::sync::Mutex::new(data.chunks_mut(chunk.max(1)).enumerate());
        self.run(&|_| loop {
            let next = pieces.lock().unwrap_or_else(|e| e.into_inner()).next();
            match next {
                Some((i, piece)) => f(i, piece),
                None => break,
            }
        });
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.stop.store(true, SeqCst);
        {
            let _g = self.shared.sleep.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
    }
}

impl std::fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ThreadPool({} threads)", self.threads())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_run_on_the_caller_and_at_most_once_per_worker() {
        for spin in [Duration::ZERO, Duration::from_millis(5)] {
            let pool = ThreadPool::new(3, spin).unwrap();
            assert_eq!(pool.threads(), 3);
            let mut joined = 0;
            for round in 0..200 {
                let hits: Vec<AtomicUsize> = (0..3).map(|_| AtomicUsize::new(0)).collect();
                // Work shared through a counter: all 64 tasks done whoever joins; the
                // tasks take long enough (~1 ms in all) for sleeping workers to wake.
                let (next, done) = (AtomicUsize::new(0), AtomicUsize::new(0));
                pool.run(&|i| {
                    hits[i].fetch_add(1, SeqCst);
                    while next.fetch_add(1, SeqCst) < 64 {
                        done.fetch_add(1, SeqCst);
                        std::thread::sleep(Duration::from_micros(20));
                    }
                });
                let got: Vec<usize> = hits.iter().map(|h| h.load(SeqCst)).collect();
                assert_eq!(got[0], 1, "round {round}");
                assert!(got.iter().all(|&n| n <= 1), "round {round}: {got:?}");
                assert_eq!(done.load(SeqCst), 64, "round {round}");
                joined += got[1] + got[2];
                if round % 50 == 0 {
                    // Let the workers fall asleep, then wake them.
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            assert!(joined > 0, "no worker ever joined a job");
        }
    }

    #[test]
    fn for_each_chunk_visits_every_piece_once() {
        let pool = ThreadPool::new(3, Duration::ZERO).unwrap();
        let mut data = vec![0usize; 1000];
        pool.for_each_chunk(&mut data, 7, &|i, piece| {
            for v in piece.iter_mut() {
                *v += i + 1;
            }
        });
        assert!(data.iter().enumerate().all(|(j, &v)| v == j / 7 + 1));
    }

    #[test]
    fn a_worker_panic_reaches_the_caller_and_the_pool_survives() {
        let pool = ThreadPool::new(2, Duration::ZERO).unwrap();
        let worker_in = AtomicBool::new(false);
        let r = catch_unwind(AssertUnwindSafe(|| {
            pool.run(&|i| {
                if i == 1 {
                    worker_in.store(true, SeqCst);
                    panic!("planted");
                }
                // Keep the job open until the worker joined (or 10 s passed).
                let start = Instant::now();
                while !worker_in.load(SeqCst) && start.elapsed() < Duration::from_secs(10) {
                    std::thread::yield_now();
                }
            })
        }));
        assert!(worker_in.load(SeqCst), "the worker never joined");
        assert!(r.is_err());
        let n = AtomicUsize::new(0);
        pool.run(&|_| {
            n.fetch_add(1, SeqCst);
        });
        assert!((1..=2).contains(&n.load(SeqCst)));
    }
}
