//! Giving memory back to the system. A long-lived daemon frees large buffers (an embedding
//! session, a repository's search index) that the C allocator keeps for reuse; on glibc that
//! keeps them resident until asked to trim.

/// Returns the allocator's free memory to the system where the allocator keeps it (glibc).
pub fn return_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free pages of the allocator's own heaps.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Caps the C allocator's arenas (glibc makes up to eight per core, one per thread that meets
/// contention), so memory one thread freed is reused by the others instead of sitting in an
/// arena of its own. Call at start, before threads are made. `HGD_MALLOC_ARENAS` overrides the
/// cap (0: glibc's default), for measuring.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let arenas = std::env::var("HGD_MALLOC_ARENAS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(DAEMON_ARENAS);
        if arenas > 0 {
            // SAFETY: mallopt only sets an allocator parameter.
            unsafe {
                libc::mallopt(libc::M_ARENA_MAX, arenas);
            }
        }
    }
}

/// Arenas the daemon's allocator uses at most.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const DAEMON_ARENAS: libc::c_int = 4;
