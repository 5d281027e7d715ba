//! Ranking regression: a small multi-language repository and 32 queries of the three kinds a
//! user asks (a symbol, what some code does, how a part of the system works). The block that
//! answers each of 25 must be in the top 3. Seven more each need one ranking rule (a method named
//! with its class beside a same-named function, a method of a generic impl, a method of a class
//! long enough to be split, a type beside a function named the same but for case, a question
//! about what a whole file does beside one block elsewhere that uses its words, a path, a
//! question that asks for tests) and sit beside a distractor that wins without it: the right
//! block, by name, must come first.

use hgd_tests::{GitRepo, Hgd};

fn project() -> GitRepo {
    let repo = GitRepo::new();
    let files: &[(&str, &str)] = &[
        (
            "src/timeparse.py",
            r#"import re

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text):
    """Turn '1h30m' or '45s' into a number of seconds."""
    total = 0
    for amount, unit in re.findall(r"(\d+)([smhd])", text):
        total += int(amount) * UNITS[unit]
    return total


def format_duration(seconds):
    """The shortest '2h5m' style spelling of a number of seconds."""
    parts = []
    for unit, size in sorted(UNITS.items(), key=lambda u: -u[1]):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts) or "0s"
"#,
        ),
        (
            "src/ratelimit.py",
            r#"import time


class RateLimiter:
    """A token bucket: `rate` requests per second, bursts up to `capacity`."""

    def __init__(self, rate, capacity):
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self.updated = time.monotonic()

    def allow(self):
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False
"#,
        ),
        (
            "src/config.py",
            r#"import json
import os


def load_config(path):
    """Read the JSON settings file and let APP_ environment variables override its keys."""
    with open(path) as f:
        settings = json.load(f)
    for key, value in os.environ.items():
        if key.startswith("APP_"):
            settings[key[4:].lower()] = value
    return settings
"#,
        ),
        (
            "tests/test_timeparse.py",
            r#"from src.timeparse import parse_duration, format_duration


def test_parse_duration_adds_units():
    assert parse_duration("1h30m") == 5400


def test_format_duration_round_trips():
    assert parse_duration(format_duration(3725)) == 3725
"#,
        ),
        (
            "server/cache.go",
            r#"package server

import "container/list"

// Cache keeps the most recently used entries up to a fixed size.
type Cache struct {
	size  int
	order *list.List
	items map[string]*list.Element
}

type entry struct {
	key   string
	value []byte
}

// Get returns the cached value and marks it as recently used.
func (c *Cache) Get(key string) ([]byte, bool) {
	el, ok := c.items[key]
	if !ok {
		return nil, false
	}
	c.order.MoveToFront(el)
	return el.Value.(*entry).value, true
}

// Evict drops the least recently used entry when the cache is over its size.
func (c *Cache) Evict() {
	for c.order.Len() > c.size {
		last := c.order.Back()
		c.order.Remove(last)
		delete(c.items, last.Value.(*entry).key)
	}
}
"#,
        ),
        (
            "server/router.go",
            r#"package server

import (
	"net/http"
	"strings"
)

// Router maps URL path prefixes to handlers; the longest matching prefix wins.
type Router struct {
	routes map[string]http.Handler
}

// ServeHTTP dispatches a request to the handler of the longest prefix of its path.
func (r *Router) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	best := ""
	for prefix := range r.routes {
		if strings.HasPrefix(req.URL.Path, prefix) && len(prefix) > len(best) {
			best = prefix
		}
	}
	if best == "" {
		http.NotFound(w, req)
		return
	}
	r.routes[best].ServeHTTP(w, req)
}
"#,
        ),
        (
            "client/retry.ts",
            r#"export interface RetryOptions {
  attempts: number;
  baseDelayMs: number;
}

/** Calls `task` until it succeeds, waiting twice as long after each failure. */
export async function retryWithBackoff<T>(task: () => Promise<T>, options: RetryOptions): Promise<T> {
  let delay = options.baseDelayMs;
  for (let attempt = 1; ; attempt++) {
    try {
      return await task();
    } catch (err) {
      if (attempt >= options.attempts) throw err;
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay *= 2;
    }
  }
}
"#,
        ),
        (
            "client/auth.ts",
            r#"export class TokenStore {
  private token: string | null = null;
  private expiresAt = 0;

  /** Keeps a bearer token and the time it stops being valid. */
  save(token: string, ttlSeconds: number): void {
    this.token = token;
    this.expiresAt = Date.now() + ttlSeconds * 1000;
  }

  /** The token, unless it has expired. */
  current(): string | null {
    return Date.now() < this.expiresAt ? this.token : null;
  }
}
"#,
        ),
        (
            "core/src/checksum.rs",
            r#"/// CRC-32 (IEEE) of a byte slice, bit by bit.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}
"#,
        ),
        (
            "core/src/queue.rs",
            r#"use std::collections::VecDeque;

/// A queue that keeps at most `limit` jobs and refuses more.
pub struct BoundedQueue<T> {
    items: VecDeque<T>,
    limit: usize,
}

impl<T> BoundedQueue<T> {
    pub fn new(limit: usize) -> Self {
        BoundedQueue { items: VecDeque::new(), limit }
    }

    /// Adds a job; gives it back when the queue is full.
    pub fn push(&mut self, item: T) -> Result<(), T> {
        if self.items.len() >= self.limit {
            return Err(item);
        }
        self.items.push_back(item);
        Ok(())
    }

    /// Takes the oldest job.
    pub fn pop(&mut self) -> Option<T> {
        self.items.pop_front()
    }
}
"#,
        ),
        (
            "lib/slug.rb",
            r#"module Text
  # Lowercases a title and joins its words with dashes, for use in URLs.
  def self.slugify(title)
    title.downcase.strip.gsub(/[^a-z0-9]+/, "-").gsub(/^-|-$/, "")
  end
end
"#,
        ),
        (
            "lib/mailer.rb",
            r#"require "net/smtp"

class Mailer
  def initialize(host, port)
    @host = host
    @port = port
  end

  # Sends a plain-text message through the SMTP server.
  def deliver(from, to, subject, body)
    message = "From: #{from}\nTo: #{to}\nSubject: #{subject}\n\n#{body}"
    Net::SMTP.start(@host, @port) { |smtp| smtp.send_message(message, from, to) }
  end
end
"#,
        ),
        // Distractors: tests, docs, an example and a vendored copy that use the same words and
        // names as the implementations, which must still rank first.
        (
            "tests/test_ratelimit.py",
            r#"from src.ratelimit import RateLimiter


def test_limit_how_many_requests_per_second_are_allowed():
    limiter = RateLimiter(rate=2, capacity=2)
    assert limiter.allow() and limiter.allow()
    assert not limiter.allow()


def test_token_bucket_refills_over_time(monkeypatch):
    limiter = RateLimiter(rate=1, capacity=1)
    limiter.allow()
    assert not limiter.allow()
"#,
        ),
        (
            "client/retry.test.ts",
            r#"import { retryWithBackoff } from "./retry";

test("failed calls are retried with increasing delays", async () => {
  let calls = 0;
  const result = await retryWithBackoff(async () => {
    calls++;
    if (calls < 3) throw new Error("failed call");
    return "ok";
  }, { attempts: 5, baseDelayMs: 1 });
  expect(result).toBe("ok");
});
"#,
        ),
        (
            "server/cache_test.go",
            r#"package server

import "testing"

// TestEvict checks that the least recently used entry is removed first.
func TestEvict(t *testing.T) {
	c := &Cache{size: 1}
	c.Evict()
	if c.order.Len() > 1 {
		t.Fatal("the least recently used entry was not removed")
	}
}
"#,
        ),
        (
            "docs/usage.md",
            "# Usage\n\n## Durations\n\nCall `parse_duration(\"1h30m\")` to convert a text like 1h30m into seconds, and `format_duration` to print a number of seconds as hours and minutes.\n\n## Rate limits\n\n`RateLimiter(rate, capacity)` limits how many requests per second are allowed; its token bucket refills over time.\n\n## Retries\n\n`retryWithBackoff` retries failed calls with increasing delays.\n\n## Slugs\n\n`Text.slugify` turns an article title into a URL-friendly string.\n",
        ),
        (
            "examples/demo.py",
            r#"from src.config import load_config
from src.ratelimit import RateLimiter
from src.timeparse import parse_duration

settings = load_config("settings.json")
limiter = RateLimiter(rate=5, capacity=10)
print(parse_duration(settings.get("timeout", "30s")))
"#,
        ),
        (
            "vendor/lru/lru.go",
            r#"package lru

import "container/list"

// LRU is a fixed-size cache.
type LRU struct {
	size  int
	evict *list.List
}

// RemoveOldest removes the least recently used entry from the cache.
func (c *LRU) RemoveOldest() {
	if el := c.evict.Back(); el != nil {
		c.evict.Remove(el)
	}
}
"#,
        ),
        (
            "lib/permalink.rb",
            r#"# Builds permalinks from slugs: the slug of a post's title under its category's slug.
class Permalink
  def initialize(title, category_slug)
    @slug = Text.slugify(title)
    @category_slug = category_slug
  end

  def path
    "/#{@category_slug}/#{@slug}"
  end
end
"#,
        ),
        // Callers that name the symbols of the qualified-member cases more often than their
        // definitions do.
        (
            "src/middleware.py",
            r#"from src.ratelimit import RateLimiter


def allow_request(limiter: RateLimiter, request):
    """Ask the RateLimiter to allow the request; always allow health checks."""
    if request.path == "/health":
        return True
    return limiter.allow()
"#,
        ),
        (
            "core/src/pool.rs",
            r#"use crate::queue::BoundedQueue;

/// Push onto a BoundedQueue: BoundedQueue::push, or drop the job when the BoundedQueue is full.
pub fn push_to_bounded_queue(queue: &mut BoundedQueue<u32>, job: u32) -> bool {
    queue.push(job).is_ok()
}
"#,
        ),
        (
            "src/audit.py",
            r#"from src.ledger import InventoryLedger


def nightly_audit(ledger: InventoryLedger, counted):
    """Reconcile the InventoryLedger balances with tonight's count (reconcile_balances)."""
    ledger.reconcile_balances(counted)
    return len(ledger.journal)
"#,
        ),
        (
            "src/acl.py",
            r#"def allow(user, action):
    """Whether the user's role grants the action."""
    return action in user.role.rights
"#,
        ),
        (
            "server/limits.go",
            r#"package server

import "time"

// Throttle spaces out calls so that at most one runs per interval.
type Throttle struct {
	interval time.Duration
	last     time.Time
}

// Wait blocks until the next call is allowed.
func (t *Throttle) Wait() {
	if next := t.last.Add(t.interval); time.Now().Before(next) {
		time.Sleep(time.Until(next))
	}
	t.last = time.Now()
}
"#,
        ),
        (
            "src/throttle.py",
            r#"import functools
import time


def throttle(seconds):
    """Decorator: calls to the wrapped throttle target closer than `seconds` apart are dropped."""
    def wrap(fn):
        last = [0.0]

        @functools.wraps(fn)
        def throttled(*args, **kwargs):
            now = time.monotonic()
            if now - last[0] >= seconds:
                last[0] = now
                return fn(*args, **kwargs)

        return throttled

    return wrap
"#,
        ),
        (
            "src/dispatch.py",
            r#"import heapq


class JobQueue:
    """Waiting jobs, kept in a heap ordered by priority and then by arrival."""

    def __init__(self):
        self.heap = []
        self.arrivals = 0

    def submit(self, job, priority):
        self.arrivals += 1
        heapq.heappush(self.heap, (-priority, self.arrivals, job))

    def pick_next(self):
        """The waiting job with the highest priority; among equals, the one that came first."""
        if not self.heap:
            return None
        return heapq.heappop(self.heap)[2]

    def age_waiting(self, boost):
        """Raise the priority of every job still waiting, so that none starves."""
        self.heap = [(p - boost, n, job) for p, n, job in self.heap]
        heapq.heapify(self.heap)
"#,
        ),
        (
            "src/helpers.py",
            r#"def pad_left(text, width):
    return " " * (width - len(text)) + text


def plural(word, count):
    return word if count == 1 else word + "s"


def describe_next_run(job):
    """A log line naming the job that runs next."""
    return f"next: {job.name}"


def hex_colour(r, g, b):
    return '#%02x%02x%02x' % (r, g, b)


def truncate(text, limit):
    return text if len(text) <= limit else text[: limit - 1] + "~"
"#,
        ),
        (
            "README.md",
            "# Toolkit\n\nA toolkit of small utilities: durations, rate limits, caching, routing, retries.\n\n## Installing\n\nCopy the folders you need into your project.\n",
        ),
    ];
    for (path, content) in files {
        repo.write(path, content);
    }
    repo.write("src/ledger.py", ledger());
    repo.commit_all("toolkit");
    repo
}

/// A class long enough to be split into its members (over 80 lines), so that a search for it or
/// for one of its methods must find the right part of a windowed definition.
fn ledger() -> String {
    let mut text = String::from(
        "class InventoryLedger:\n    \"\"\"Stock levels per warehouse, with a journal of every movement.\"\"\"\n\n    def __init__(self):\n        self.levels = {}\n        self.journal = []\n\n",
    );
    for item in [
        "pallets", "crates", "boxes", "bottles", "sacks", "barrels", "bundles", "cartons", "drums",
        "reels", "rolls", "tubes",
    ] {
        text.push_str(&format!(
            "    def receive_{item}(self, warehouse, count):\n        key = (warehouse, \"{item}\")\n        self.levels[key] = self.levels.get(key, 0) + count\n        self.journal.append((\"in\", warehouse, \"{item}\", count))\n        return self.levels[key]\n\n"
        ));
    }
    text.push_str(
        "    def reconcile_balances(self, counted):\n        \"\"\"Replace book levels by a physical count and journal the differences.\"\"\"\n        for key, actual in counted.items():\n            delta = actual - self.levels.get(key, 0)\n            if delta:\n                self.journal.append((\"adjust\", *key, delta))\n            self.levels[key] = actual\n",
    );
    text
}

/// (query, the file that answers it, a line of the definition that answers it): the result must
/// be a block of that file whose lines include that line.
const CASES: &[(&str, &str, &str)] = &[
    // Symbols.
    ("parse_duration", "src/timeparse.py", "def parse_duration"),
    ("RateLimiter", "src/ratelimit.py", "class RateLimiter"),
    ("Cache.Evict", "server/cache.go", "func (c *Cache) Evict"),
    (
        "retryWithBackoff",
        "client/retry.ts",
        "export async function retryWithBackoff",
    ),
    (
        "BoundedQueue",
        "core/src/queue.rs",
        "pub struct BoundedQueue",
    ),
    ("crc32", "core/src/checksum.rs", "pub fn crc32"),
    ("slugify", "lib/slug.rb", "def self.slugify"),
    ("TokenStore", "client/auth.ts", "export class TokenStore"),
    ("load_config", "src/config.py", "def load_config"),
    // A long class.
    ("InventoryLedger", "src/ledger.py", "class InventoryLedger"),
    // What some code does.
    (
        "convert a text like 1h30m into seconds",
        "src/timeparse.py",
        "def parse_duration",
    ),
    (
        "print a number of seconds as hours and minutes",
        "src/timeparse.py",
        "def format_duration",
    ),
    (
        "limit how many requests per second are allowed",
        "src/ratelimit.py",
        "class RateLimiter",
    ),
    (
        "remove the least recently used entry",
        "server/cache.go",
        "func (c *Cache) Evict",
    ),
    (
        "compute a CRC checksum of bytes",
        "core/src/checksum.rs",
        "pub fn crc32",
    ),
    (
        "turn an article title into a URL-friendly string",
        "lib/slug.rb",
        "def self.slugify",
    ),
    ("send an email over SMTP", "lib/mailer.rb", "def deliver"),
    (
        "refuse new jobs when the queue is full",
        "core/src/queue.rs",
        "pub fn push",
    ),
    (
        "check whether the saved bearer token has expired",
        "client/auth.ts",
        "current(): string",
    ),
    // How a part works.
    (
        "how are failed calls retried with increasing delays",
        "client/retry.ts",
        "delay *= 2",
    ),
    (
        "how does the router pick a handler for a request path",
        "server/router.go",
        "func (r *Router) ServeHTTP",
    ),
    (
        "how are settings read and overridden by environment variables",
        "src/config.py",
        "def load_config",
    ),
    (
        "how does the token bucket refill over time",
        "src/ratelimit.py",
        "def allow",
    ),
    (
        "what keeps the cache's entries in order of use",
        "server/cache.go",
        "order *list.List",
    ),
    (
        "how are cached values looked up",
        "server/cache.go",
        "func (c *Cache) Get",
    ),
];

/// Queries one ranking rule answers, each beside a distractor that wins without that rule:
/// (query, file, the name of the block that must come first, the rule).
const FIRST: &[(&str, &str, &str, &str)] = &[
    // A method of a short class, with a same-named function elsewhere (src/acl.py): the class.
    (
        "RateLimiter.allow",
        "src/ratelimit.py",
        "RateLimiter",
        "definitions",
    ),
    // A method of a generic impl: the impl that holds it, not the struct.
    (
        "BoundedQueue::push",
        "core/src/queue.rs",
        "BoundedQueue<T>",
        "definitions",
    ),
    // A method of a long class, split into members: the method itself, not the class (no rule
    // needed: the member is an entry of its own, named after its class).
    (
        "InventoryLedger.reconcile_balances",
        "src/ledger.py",
        "InventoryLedger.reconcile_balances",
        "",
    ),
    // A type, beside a same-named function in a file named after it (src/throttle.py): the
    // name written with the query's case.
    ("Throttle", "server/limits.go", "Throttle", "exact_case"),
    // A question about what a whole file does, beside one block of an unrelated file that
    // uses its words (src/helpers.py): the file whose blocks are about it.
    (
        "how does the scheduler decide which job runs next",
        "src/dispatch.py",
        "JobQueue",
        "file_meaning",
    ),
    // A path, beside lib/permalink.rb, which says "slug" more often. (Not `lib/slug.rb`: from
    // the repository's root that names an existing file, which asks for code like it.)
    ("slug.rb", "lib/slug.rb", "Text", "path_query"),
    // Tests, asked for, beside the implementation they test.
    (
        "tests for evicting cache entries",
        "server/cache_test.go",
        "TestEvict",
        "asks_for",
    ),
];

/// The results of `query`, best first, as "file name".
fn ranked(hgd: &Hgd, repo: &GitRepo, query: &str, n: usize) -> Vec<String> {
    hgd.search_json(&repo.path(), query, n)
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                r["file"].as_str().unwrap_or(""),
                r["name"].as_str().unwrap_or("")
            )
        })
        .collect()
}

/// The first result of each query in `FIRST`, as "file name".
fn firsts(hgd: &Hgd, repo: &GitRepo) -> Vec<String> {
    FIRST
        .iter()
        .map(|(query, ..)| {
            ranked(hgd, repo, query, 3)
                .into_iter()
                .next()
                .unwrap_or_default()
        })
        .collect()
}

#[test]
fn every_query_finds_its_block_in_the_top_three() {
    let hgd = Hgd::new();
    let repo = project();
    hgd.index(&repo.path());
    let mut failures = Vec::new();
    for (query, file, marker) in CASES {
        let text = std::fs::read_to_string(repo.path().join(file)).unwrap();
        let line = text
            .lines()
            .position(|l| l.contains(marker))
            .unwrap_or_else(|| panic!("{marker:?} is not in {file}")) as u64
            + 1;
        let results = hgd.search_json(&repo.path(), query, 3);
        let found = results.iter().any(|r| {
            r["file"] == *file
                && r["line"].as_u64() <= Some(line)
                && r["end_line"].as_u64() >= Some(line)
        });
        if !found {
            let got: Vec<String> = results
                .iter()
                .map(|r| {
                    format!(
                        "{}:{}-{} {}",
                        r["file"], r["line"], r["end_line"], r["name"]
                    )
                })
                .collect();
            failures.push(format!("{query:?}: want {file}:{line}, got {got:?}"));
        }
    }
    for ((query, file, name, _), got) in FIRST.iter().zip(firsts(&hgd, &repo)) {
        if got != format!("{file} {name}") {
            failures.push(format!("{query:?}: want {file} {name} first, got {got}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} queries missed:\n{}",
        failures.len(),
        CASES.len() + FIRST.len(),
        failures.join("\n")
    );
}

/// Each query of `FIRST` that names a rule needs it: with that rule off, something else comes
/// first, while the block is still found lower down (the search itself works).
#[test]
fn each_rule_case_fails_without_its_rule() {
    let repo = project();
    let mut rules: Vec<&str> = FIRST
        .iter()
        .map(|case| case.3)
        .filter(|rule| !rule.is_empty())
        .collect();
    rules.sort();
    rules.dedup();
    let mut wrong = Vec::new();
    for rule in rules {
        let hgd = Hgd::new().with_env("HGD_RANK_WITHOUT", rule);
        hgd.index(&repo.path());
        assert!(
            hgd.log().contains("HGD_RANK_WITHOUT"),
            "the daemon did not switch {rule} off:\n{}",
            hgd.log()
        );
        for (query, file, name, needs) in FIRST.iter().filter(|case| case.3 == rule) {
            let want = format!("{file} {name}");
            let got = ranked(&hgd, &repo, query, 10);
            match got.iter().position(|g| *g == want) {
                Some(0) => wrong.push(format!("{query:?} is still first without {needs}")),
                None => wrong.push(format!(
                    "{query:?} without {needs}: {want} is not in the top 10: {got:?}"
                )),
                Some(_) => {}
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}
