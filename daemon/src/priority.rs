//! Background priority for indexing, so searches keep the CPU while a long job runs.
//!
//! Indexing runs on threads of its own (`spawn_background`) that lower their own priority before
//! any work: on Linux nice 10 and the idle I/O class, per thread; on macOS the utility QoS class.
//! ONNX Runtime's worker threads inherit the priority of the thread that makes the session, so
//! the indexing session is made on such a thread too (`embed.rs`). The daemon's other threads
//! (socket, searches, the query session) keep normal priority. This is the one place with
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
            const IOPRIO_WHO_PROCESS: libc::c_long = 1;
            const IOPRIO_CLASS_IDLE: libc::c_long = 3;
            const IOPRIO_CLASS_SHIFT: libc::c_long = 13;
            if libc::syscall(
                libc::SYS_ioprio_set,
                IOPRIO_WHO_PROCESS,
                tid as libc::c_long,
                IOPRIO_CLASS_IDLE << IOPRIO_CLASS_SHIFT,
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

/// Runs `work` on a short-lived background-priority thread and waits for it: for making
/// something whose own threads must inherit that priority (ONNX Runtime's worker pool).
pub fn run_in_background<T, F>(work: F) -> T
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                lower_this_thread();
                work()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}
