//! Many clients at once: concurrent searches over several repositories while a large first index
//! runs and hooks send bursts of notifications. Every search must succeed.
//!
//! CI runs a short form (8 clients x 15 searches). The long form, whose p50 and p99 are in
//! RELIABILITY.md:
//! `HGD_LOAD_CLIENTS=32 HGD_LOAD_SEARCHES=200 cargo nextest run -p hgd-tests --test load --no-capture`

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hgd_tests::{GitRepo, Hgd};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn small_repo(topic: &str) -> GitRepo {
    let repo = GitRepo::new();
    for i in 0..12 {
        repo.write(
            &format!("{topic}/part_{i}.py"),
            format!("def {topic}_handler_{i}(request):\n    \"\"\"Handle {topic} request number {i}.\"\"\"\n    return request.reply({i})\n"),
        );
    }
    repo.commit_all(topic);
    repo
}

#[test]
fn concurrent_searches_all_succeed_during_a_large_index_and_hook_bursts() {
    let clients = env_or("HGD_LOAD_CLIENTS", 8);
    let searches = env_or("HGD_LOAD_SEARCHES", 15);
    let hgd = Arc::new(Hgd::new());
    let repos: Vec<GitRepo> = ["billing", "shipping", "accounts"]
        .iter()
        .map(|t| small_repo(t))
        .collect();
    for repo in &repos {
        hgd.index(&repo.path());
    }
    // A large first index, started and left running.
    let large = GitRepo::new();
    for i in 0..400 {
        large.write(
            &format!("lib/mod{}/unit_{i}.py", i % 10),
            format!("def compute_unit_{i}(x):\n    return x * {i}\n\n\ndef describe_unit_{i}():\n    return 'unit {i}'\n"),
        );
    }
    large.commit_all("large");
    assert!(hgd
        .hgd(&large.path(), &["index", "--no-wait"])
        .status
        .success());

    // The large job must really run beside the searches.
    let running = |hgd: &Hgd| {
        hgd.status(&large.path())["repos"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["root"].as_str() == large.path().to_str() && r["state"] == "indexing")
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !running(&hgd) {
        assert!(Instant::now() < deadline, "the large index did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let failures = Arc::new(Mutex::new(Vec::new()));
    let times = Arc::new(Mutex::new(Vec::new()));
    let stop_notifying = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let paths: Vec<std::path::PathBuf> = repos.iter().map(|r| r.path()).collect();
    let notifier = {
        let (hgd, paths, stop) = (hgd.clone(), paths.clone(), stop_notifying.clone());
        let large = large.path();
        std::thread::spawn(move || {
            let mut bursts = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // A burst, as a rebase's hooks send.
                for path in paths.iter().chain([&large]) {
                    for _ in 0..5 {
                        let out = hgd.hgd(path, &["notify"]);
                        assert!(out.status.success());
                    }
                }
                bursts += 1;
                std::thread::sleep(Duration::from_millis(300));
            }
            bursts
        })
    };
    let workers: Vec<_> = (0..clients)
        .map(|c| {
            let (hgd, paths) = (hgd.clone(), paths.clone());
            let (failures, times) = (failures.clone(), times.clone());
            std::thread::spawn(move || {
                let topics = ["billing", "shipping", "accounts"];
                for s in 0..searches {
                    let r = (c + s) % paths.len();
                    let query = format!("handle {} request number {}", topics[r], s % 12);
                    let started = Instant::now();
                    let out = hgd.hgd(&paths[r], &["search", "--json", "-n", "5", &query]);
                    let took = started.elapsed();
                    let parsed: Option<Vec<serde_json::Value>> =
                        serde_json::from_slice(&out.stdout).ok();
                    let ok = out.status.code() == Some(0)
                        && parsed.is_some_and(|hits| {
                            hits.first()
                                .and_then(|h| h["file"].as_str())
                                .is_some_and(|f| f.starts_with(topics[r]))
                        });
                    if ok {
                        times.lock().unwrap().push(took);
                    } else {
                        failures.lock().unwrap().push(format!(
                            "client {c} search {s} ({query}): exit {:?}: {}",
                            out.status.code(),
                            String::from_utf8_lossy(&out.stderr)
                        ));
                    }
                }
            })
        })
        .collect();
    // Still running when the searches were done: they ran beside it.
    let ran_beside = {
        for worker in workers {
            worker.join().unwrap();
        }
        running(&hgd)
    };
    stop_notifying.store(true, std::sync::atomic::Ordering::Relaxed);
    let bursts = notifier.join().unwrap();
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} searches failed:\n{}",
        failures.len(),
        clients * searches,
        failures.join("\n")
    );
    let mut times = times.lock().unwrap().clone();
    times.sort();
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    println!(
        "{clients} clients x {searches} searches, {bursts} notification bursts: 0 errors, p50 {:.1?}, p99 {:.1?}, max {:.1?}",
        at(0.50),
        at(0.99),
        times.last().unwrap()
    );
    assert!(
        ran_beside || clients * searches > 200,
        "the large index ended before the searches: make it larger"
    );
    // The large index went on meanwhile and still completes.
    hgd.index(&large.path());
}
