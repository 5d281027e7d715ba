//! `status`: the daemon and every tracked repository.

use std::sync::Arc;

use hgd_protocol::{Response, Status};

use crate::server::Replies;
use crate::service::Service;

pub async fn run(service: &Arc<Service>, replies: &mut Replies<'_>) -> bool {
    let status = Status {
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").into(),
        uptime_secs: service.uptime().as_secs(),
        resident_bytes: resident_bytes(),
        search_index_bytes: service.indexes.memory_bytes() as u64,
        model: service.store.model_id().to_owned(),
        blocks_embedded: service.blocks_embedded(),
        jobs_run: service.jobs_run(),
        store_bytes: crate::store::Store::disk_bytes(&service.home.db_dir()),
        repos: service.repo_statuses().await,
        remotes: service.remotes.statuses(),
    };
    replies.send(&Response::Status(status)).await
}

/// Current resident set size: /proc on Linux, peak RSS from getrusage elsewhere.
fn resident_bytes() -> u64 {
    if let Ok(statm) = std::fs::read_to_string("/proc/self/statm") {
        let pages: u64 = statm
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        return pages * page.max(0) as u64;
    }
    // SAFETY: getrusage writes into the zeroed struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0;
    }
    let max = usage.ru_maxrss.max(0) as u64;
    if cfg!(target_os = "macos") {
        max
    } else {
        max * 1024
    }
}
