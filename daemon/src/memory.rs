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
