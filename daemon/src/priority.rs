//! Background priority for indexing, so searches keep the CPU while a long job runs.
//!
//! Indexing runs on threads of its own (`spawn_background`) that lower their own priority before
//! any work: on Linux nice 10 and the lowest best-effort I/O level, per thread; on macOS the
//! utility QoS class. ONNX Runtime's workers for the indexing session are made by
//! [`BackgroundThreads`], which does the same in each. The daemon's other threads (socket,
//! searches, the query session) keep normal priority. This is the one place with
//! platform-specific scheduling code.

use std::future::Future;

/// Nice value of indexing threads on Linux: the scheduler then gives a normal-priority thread
/// about ten times the CPU share of an indexing thread when both want it.
#[cfg(target_os = "linux")]
const INDEX_NICE: libc::c_int = 10;

/// Lowers the calling thread's CPU and I/O priority for good (an unprivileged thread cannot
/// raise it again), so call it only on threads made for background work. Failures are logged
/// once per thread and otherwise ignored: indexing at normal priority is still correct.
pub fn lower_this_thread() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid, setpriority and ioprio_set only read their integer arguments and act
        // on the calling thread.
        unsafe {
            let tid = libc::gettid();
            if libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, INDEX_NICE) != 0 {
                tracing::debug!(
                    "could not lower indexing thread priority: {}",
                    std::io::Error::last_os_error()
                );
            }
            // Best effort at its lowest level rather than the idle class: with some disk
            // schedulers an idle-class read waits for as long as other I/O goes on.
            const IOPRIO_WHO_PROCESS: libc::c_long = 1;
            const IOPRIO_CLASS_BE: libc::c_long = 2;
            const IOPRIO_CLASS_SHIFT: libc::c_long = 13;
            const LOWEST_LEVEL: libc::c_long = 7;
            if libc::syscall(
                libc::SYS_ioprio_set,
                IOPRIO_WHO_PROCESS,
                tid as libc::c_long,
                (IOPRIO_CLASS_BE << IOPRIO_CLASS_SHIFT) | LOWEST_LEVEL,
            ) != 0
            {
                tracing::debug!(
                    "could not lower indexing thread I/O priority: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
    }
    #[cfg(target_os = "macos")]
    {
        // Utility rather than background: background QoS keeps a thread on the efficiency cores
        // and throttles its I/O, which would make a first index several times slower.
        // SAFETY: sets the calling thread's QoS class; no pointers.
        let rc =
            unsafe { libc::pthread_set_qos_class_self_np(libc::qos_class_t::QOS_CLASS_UTILITY, 0) };
        if rc != 0 {
            tracing::debug!("could not lower indexing thread QoS: error {rc}");
        }
    }
}

/// The calling thread's nice value (Linux), for tests and diagnostics.
#[cfg(target_os = "linux")]
pub fn this_thread_nice() -> i32 {
    // SAFETY: plain integer arguments; errno is cleared first because -1 is a valid result.
    unsafe {
        *libc::__errno_location() = 0;
        libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t)
    }
}

/// Runs `work` on a new thread named `name` at background priority; the future resolves to its
/// result, or to `None` when it panicked (the panic is logged by the default hook).
pub fn spawn_background<T, F>(name: &str, work: F) -> impl Future<Output = Option<T>>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            lower_this_thread();
            let _ = tx.send(work());
        });
    if let Err(e) = &spawned {
        tracing::error!("could not start thread {name}: {e}");
    }
    async move { rx.await.ok() }
}

/// Makes the worker threads of ONNX Runtime's indexing session, each at background priority
/// from its start (a thread's macOS QoS class does not pass to threads it creates, so the
/// session's workers are made here rather than left to inherit).
pub struct BackgroundThreads;

impl ort::environment::ThreadManager for BackgroundThreads {
    type Thread = std::thread::JoinHandle<()>;

    fn create(&self, work: impl FnOnce() + Send + 'static) -> ort::Result<Self::Thread> {
        std::thread::Builder::new()
            .name("hgd-onnx-index".to_owned())
            .spawn(move || {
                lower_this_thread();
                work();
            })
            .map_err(|e| ort::Error::new(format!("starting an indexing thread: {e}")))
    }

    fn join(thread: Self::Thread) -> ort::Result<()> {
        // A worker that panicked has already reported it; nothing more to do here.
        let _ = thread.join();
        Ok(())
    }
}
