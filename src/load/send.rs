//! The senders: tasks that post reactions at a share of the asked rate and record what the
//! system accepted.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataflows::wall_clock_ms;
use hdrhistogram::Histogram;
use serde_json::json;

use super::ledger::{Ledger, EMOJIS};
use super::spread::Zipf;

/// Live totals over every sender, for the progress line.
#[derive(Debug, Default)]
pub struct Progress {
    /// Reactions sent.
    pub sent: AtomicU64,
    /// Reactions accepted.
    pub accepted: AtomicU64,
    /// Requests that failed or were refused.
    pub failed: AtomicU64,
}

/// What one sender did.
pub struct Sent {
    /// Accepted reactions.
    pub ledger: Ledger,
    /// Reactions sent.
    pub sent: u64,
    /// Reactions sent per stream (indexed like the run's streams).
    pub sent_by_stream: Vec<u64>,
    /// Reactions refused, by HTTP status.
    pub refused: BTreeMap<u16, u64>,
    /// Requests that got no HTTP answer (connection refused, timeout).
    pub transport_errors: u64,
    /// The first transport error, to report.
    pub first_error: Option<String>,
    /// Request latency in µs.
    pub latency_us: Histogram<u64>,
}

impl Sent {
    fn new() -> Sent {
        Sent {
            ledger: Ledger::default(),
            sent: 0,
            sent_by_stream: Vec::new(),
            refused: BTreeMap::new(),
            transport_errors: 0,
            first_error: None,
            latency_us: latency_histogram(),
        }
    }

    /// Adds another sender's results.
    pub fn absorb(&mut self, other: Sent) {
        self.ledger.absorb(other.ledger);
        self.sent += other.sent;
        if self.sent_by_stream.len() < other.sent_by_stream.len() {
            self.sent_by_stream.resize(other.sent_by_stream.len(), 0);
        }
        for (mine, theirs) in self.sent_by_stream.iter_mut().zip(other.sent_by_stream) {
            *mine += theirs;
        }
        for (status, n) in other.refused {
            *self.refused.entry(status).or_default() += n;
        }
        self.transport_errors += other.transport_errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        // Both histograms share bounds, so adding cannot fail.
        let _ = self.latency_us.add(&other.latency_us);
    }

    /// Results of no sender.
    pub fn empty() -> Sent {
        Sent::new()
    }
}

/// A latency histogram from 1 µs to 10 min at 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("constant histogram bounds are valid")
}

/// One sender's part of the load.
pub struct Plan {
    /// Where the API is, e.g. `http://127.0.0.1:8080`.
    pub target: String,
    /// Reactions per request; 1 posts single reactions to `/emoji`.
    pub batch: usize,
    /// Time between this sender's requests.
    pub every: Duration,
    /// When this sender sends first.
    pub first_at: Instant,
    /// When sending stops.
    pub until: Instant,
    /// Users the reactions come from.
    pub users: u64,
    /// This sender's index, so senders pick different users and emojis.
    pub index: u64,
    /// The streams' names, hottest first; with the default stream alone, reactions name
    /// none (as before streams existed).
    pub streams: Arc<Vec<String>>,
    /// The choice of stream per reaction.
    pub zipf: Arc<Zipf>,
    /// Share of reactions stamped `late_by_ms` in the past.
    pub late_fraction: f64,
    /// How far late reactions are stamped in the past.
    pub late_by_ms: i64,
    /// The start of the run's first window: no reaction is stamped before it.
    pub not_before_ms: i64,
}

/// Whether the `seq`-th reaction is sent late: a hash of `seq` (another than [`pick`]'s), so
/// the choice is the same on every run.
fn is_late(seq: u64, fraction: f64) -> bool {
    let roll = (splitmix(seq ^ 0x6c61_7465) >> 11) as f64 / (1u64 << 53) as f64;
    fraction > 0.0 && roll < fraction
}

/// Picks the `seq`-th reaction's user and emoji: a hash of `seq` spreads users evenly and
/// picks emojis with weights 1/rank, the same way on every run.
pub fn pick(seq: u64, users: u64) -> (u64, usize) {
    let h = splitmix(seq);
    let user = h % users.max(1);
    // Weights 1/rank scaled to integers: 840 is divisible by 1..=8.
    const WEIGHTS: [u64; EMOJIS.len()] = [840, 420, 280, 210, 168, 140, 120, 105];
    let total: u64 = WEIGHTS.iter().sum();
    let mut roll = (h >> 32) % total;
    let mut emoji = 0;
    for (i, w) in WEIGHTS.iter().enumerate() {
        if roll < *w {
            emoji = i;
            break;
        }
        roll -= w;
    }
    (user, emoji)
}

/// Picks the `seq`-th reaction's stream (a rank of `zipf`), from a hash independent of the
/// one [`pick`] uses, so the stream says nothing about the user or the emoji.
pub fn pick_stream(seq: u64, zipf: &Zipf) -> usize {
    // Any odd 64-bit constant gives splitmix another sequence; this one is wyhash's.
    const STREAM_SALT: u64 = 0xa076_1d64_78bd_642f;
    zipf.sample(splitmix(seq ^ STREAM_SALT))
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Sends until `plan.until`, at one request per `plan.every`.
pub async fn send(client: reqwest::Client, plan: Plan, progress: Arc<Progress>) -> Sent {
    let mut sent = Sent::new();
    let url = if plan.batch > 1 {
        format!("{}/emoji/batch", plan.target)
    } else {
        format!("{}/emoji", plan.target)
    };
    let mut ticker = tokio::time::interval_at(plan.first_at.into(), plan.every);
    // A slow server lowers the rate sent rather than piling requests up; the report shows it.
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut seq = plan.index << 40;
    sent.sent_by_stream = vec![0; plan.streams.len()];
    let named = plan.streams.len() > 1;
    loop {
        ticker.tick().await;
        if Instant::now() >= plan.until {
            break;
        }
        let now = wall_clock_ms();
        let reactions: Vec<(u64, usize, usize, i64, bool)> = (0..plan.batch)
            .map(|_| {
                seq += 1;
                let (user, emoji) = pick(seq, plan.users);
                let late = is_late(seq, plan.late_fraction);
                let ts = if late {
                    now.saturating_sub(plan.late_by_ms).max(plan.not_before_ms)
                } else {
                    now
                };
                (user, emoji, pick_stream(seq, &plan.zipf), ts, late)
            })
            .collect();
        let bodies: Vec<serde_json::Value> = reactions
            .iter()
            .map(|(user, emoji, stream, ts, _)| {
                let mut body = json!({"user_id": format!("load-{user}"), "emoji_type": EMOJIS[*emoji], "timestamp": ts});
                if let (true, Some(name)) = (named, plan.streams.get(*stream)) {
                    body["stream_id"] = json!(name);
                }
                body
            })
            .collect();
        for (_, _, stream, ..) in &reactions {
            if let Some(n) = sent.sent_by_stream.get_mut(*stream) {
                *n += 1;
            }
        }
        let body = if plan.batch > 1 {
            serde_json::Value::Array(bodies)
        } else {
            bodies.into_iter().next().unwrap_or_default()
        };
        let n = reactions.len() as u64;
        sent.sent += n;
        progress.sent.fetch_add(n, Ordering::Relaxed);
        let began = Instant::now();
        let answer = client.post(&url).json(&body).send().await;
        let answer = match answer {
            Ok(response) => {
                let status = response.status().as_u16();
                let body = response.bytes().await;
                body.map(|b| (status, b))
            }
            Err(e) => Err(e),
        };
        let _ = sent
            .latency_us
            .record(began.elapsed().as_micros().max(1) as u64);
        match answer {
            Err(e) => {
                sent.transport_errors += 1;
                progress.failed.fetch_add(1, Ordering::Relaxed);
                sent.first_error.get_or_insert_with(|| e.to_string());
            }
            Ok((status, body)) => {
                // A 202 accepts the whole request; a 503 from a failing broker says how many
                // of the first reactions it accepted.
                let accepted = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v.get("accepted").and_then(serde_json::Value::as_u64))
                    .unwrap_or(if status == 202 { n } else { 0 })
                    .min(n);
                for (_, emoji, stream, ts, late) in reactions.iter().take(accepted as usize) {
                    if *late {
                        sent.ledger.record_late(*stream, *ts, *emoji);
                    } else {
                        sent.ledger.record(*stream, *ts, *emoji);
                    }
                }
                progress.accepted.fetch_add(accepted, Ordering::Relaxed);
                if accepted < n {
                    *sent.refused.entry(status).or_default() += n - accepted;
                    progress.failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    sent
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_spread_users_and_favour_popular_emojis() {
        let mut users = std::collections::HashSet::new();
        let mut emojis = [0u64; EMOJIS.len()];
        for seq in 0..100_000 {
            let (user, emoji) = pick(seq, 1000);
            assert!(user < 1000);
            users.insert(user);
            emojis[emoji] += 1;
        }
        assert_eq!(users.len(), 1000);
        // Weights 1/rank: the first is about twice the second and eight times the last.
        let ratio = emojis[0] as f64 / emojis[7] as f64;
        assert!((7.0..9.0).contains(&ratio), "{emojis:?}");
        assert!(emojis.windows(2).all(|w| w[0] > w[1]), "{emojis:?}");
    }

    #[test]
    fn the_stream_does_not_follow_the_emoji() {
        // Were both picks one hash, the hottest stream would get only the hottest emojis.
        let zipf = Zipf::new(10, 1.0);
        let mut hot_stream = [0u64; EMOJIS.len()];
        let mut streams = [0u64; 10];
        for seq in 0..200_000 {
            let stream = pick_stream(seq, &zipf);
            streams[stream] += 1;
            if stream == 0 {
                hot_stream[pick(seq, 1000).1] += 1;
            }
        }
        assert!(hot_stream.iter().all(|n| *n > 0), "{hot_stream:?}");
        assert!(streams.windows(2).all(|w| w[0] > w[1]), "{streams:?}");
        let ratio = hot_stream[0] as f64 / hot_stream[7] as f64;
        assert!((7.0..9.0).contains(&ratio), "{hot_stream:?}");
    }
}
