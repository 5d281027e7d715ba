//! Fault injection for the reliability tests: points where the daemon fails on purpose when an
//! environment variable asks for it, so tests can show that a real fault of that kind (a parser
//! or runtime that panics) is contained. Off unless the variable is set.

use std::sync::OnceLock;

/// `HGD_FAULT_PANIC_PATH=TEXT`: parsing a file whose path contains TEXT panics (on a job's parse
/// thread), and so does planning a job of a repository whose root contains it (on the async
/// path that runs the job).
pub fn panic_if_asked(stage: &str, path: &str) {
    static PANIC_PATH: OnceLock<Option<String>> = OnceLock::new();
    let asked = PANIC_PATH.get_or_init(|| {
        std::env::var("HGD_FAULT_PANIC_PATH")
            .ok()
            .filter(|v| !v.is_empty())
    });
    if let Some(text) = asked {
        if path.contains(text.as_str()) {
            panic!("fault injection: {stage} of {path} panics (HGD_FAULT_PANIC_PATH)");
        }
    }
}

/// `HGD_FAULT_PUBLISH_INSERT_AT_MS=T` (milliseconds since the Unix epoch): a publish that has
/// found what the remote lacks waits until T to insert it, so two publishers given the same T
/// insert at the same instant and their commits race (the test of concurrent publishers).
pub async fn wait_to_insert_if_asked() {
    static AT: OnceLock<Option<u64>> = OnceLock::new();
    let at = AT.get_or_init(|| {
        std::env::var("HGD_FAULT_PUBLISH_INSERT_AT_MS")
            .ok()
            .and_then(|v| v.parse().ok())
    });
    if let Some(at) = at {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        tokio::time::sleep(std::time::Duration::from_millis(at.saturating_sub(now))).await;
    }
}
