//! How the load is spread over streams: their names, a Zipf choice of stream per reaction,
//! and which streams the SSE clients watch.
//!
//! Live platforms have a few hot events and a long tail, so reactions go to stream `k` (rank
//! `k`, from 0) with weight `1/(k+1)^s`. The choice is a pure function of a hash, so a run
//! sends the same spread every time.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// The stream names for `--streams count`: the default stream alone for 1 (a run as before
/// streams existed), else `load-0` … `load-{count-1}`, hottest first.
pub fn stream_names(count: usize) -> Vec<String> {
    if count <= 1 {
        return vec![dataflows::StreamId::DEFAULT.to_owned()];
    }
    (0..count).map(|k| format!("load-{k}")).collect()
}

/// The Zipf weight of rank `k` (from 0) for exponent `skew`.
fn weight(k: usize, skew: f64) -> f64 {
    ((k + 1) as f64).powf(-skew)
}

/// A Zipf distribution over ranks `0..n`, sampled from a uniform hash by binary search in a
/// precomputed cumulative distribution (no random-number crate is needed for that).
#[derive(Debug, Clone)]
pub struct Zipf {
    /// `cdf[k]`: the probability of a rank ≤ k; the last is 1.
    cdf: Vec<f64>,
}

impl Zipf {
    /// Ranks `0..n` (at least one) with weights `1/(k+1)^skew`; `skew` 0 is uniform.
    pub fn new(n: usize, skew: f64) -> Zipf {
        let n = n.max(1);
        let mut cdf = Vec::with_capacity(n);
        let mut sum = 0.0;
        for k in 0..n {
            sum += weight(k, skew);
            cdf.push(sum);
        }
        for c in &mut cdf {
            *c /= sum;
        }
        // Rounding can leave the last just under 1, which would leave a sliver of draws past
        // the last rank.
        if let Some(last) = cdf.last_mut() {
            *last = 1.0;
        }
        Zipf { cdf }
    }

    /// How many ranks (at least one).
    pub fn ranks(&self) -> usize {
        self.cdf.len()
    }

    /// The rank for a uniform 64-bit hash.
    pub fn sample(&self, hash: u64) -> usize {
        // The top 53 bits: a uniform double in [0, 1).
        let u = (hash >> 11) as f64 / (1u64 << 53) as f64;
        self.cdf
            .partition_point(|c| *c <= u)
            .min(self.cdf.len() - 1)
    }
}

/// The stream (rank) each of `clients` SSE clients watches, over `streams` streams.
///
/// With at least as many clients as streams every stream gets one, so every stream that gets
/// reactions is checked; the rest (or, with fewer clients than streams, all of them) go by
/// the same Zipf weights, by highest averages (Sainte-Laguë, the divisor method closest to
/// proportional): deterministic, and the hot streams, which carry most reactions, are watched
/// first and by the most clients (6 clients over 3 streams: 3, 2, 1).
pub fn client_streams(clients: usize, streams: usize, skew: f64) -> Vec<usize> {
    let streams = streams.max(1);
    let every_stream = clients >= streams;
    let mut assigned: Vec<usize> = if every_stream {
        (0..streams).collect()
    } else {
        Vec::new()
    };
    let mut seats = vec![u64::from(every_stream); streams];
    let mut heap: BinaryHeap<Quotient> = (0..streams)
        .map(|k| Quotient {
            value: claim(k, skew, seats[k]),
            stream: k,
        })
        .collect();
    while assigned.len() < clients {
        let Some(top) = heap.pop() else { break };
        assigned.push(top.stream);
        seats[top.stream] += 1;
        heap.push(Quotient {
            value: claim(top.stream, skew, seats[top.stream]),
            stream: top.stream,
        });
    }
    assigned
}

/// Stream `k`'s claim to one more client when it has `seats`: Sainte-Laguë's quotient.
fn claim(k: usize, skew: f64, seats: u64) -> f64 {
    weight(k, skew) / (2 * seats + 1) as f64
}

/// A stream's claim to the next client.
struct Quotient {
    value: f64,
    stream: usize,
}

impl PartialEq for Quotient {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Quotient {}

impl PartialOrd for Quotient {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Quotient {
    /// Higher claims first; on a tie the hotter (lower) rank, so the order is deterministic.
    fn cmp(&self, other: &Self) -> Ordering {
        self.value
            .total_cmp(&other.value)
            .then_with(|| other.stream.cmp(&self.stream))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn splitmix(x: u64) -> u64 {
        let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    #[test]
    fn one_stream_is_the_default_stream() {
        assert_eq!(stream_names(1), vec!["default"]);
        assert_eq!(stream_names(3), vec!["load-0", "load-1", "load-2"]);
        for name in stream_names(1000) {
            assert!(dataflows::StreamId::parse(&name).is_ok(), "{name}");
        }
        let zipf = Zipf::new(1, 1.0);
        assert!((0..1000).all(|i| zipf.sample(splitmix(i)) == 0));
    }

    #[test]
    fn zipf_draws_follow_the_weights() {
        let zipf = Zipf::new(100, 1.0);
        assert_eq!(zipf.ranks(), 100);
        let mut counts = vec![0u64; 100];
        let draws = 1_000_000u64;
        for i in 0..draws {
            counts[zipf.sample(splitmix(i))] += 1;
        }
        // Weight 1/(k+1) over H(100) ≈ 5.187: rank 0 ≈ 19.3 %, rank 1 half of it, rank 9 a
        // tenth; every rank is drawn.
        let share = |k: usize| counts[k] as f64 / draws as f64;
        let h100: f64 = (1..=100).map(|k| 1.0 / k as f64).sum();
        for k in [0, 1, 9, 99] {
            let expected = 1.0 / ((k + 1) as f64 * h100);
            assert!(
                (share(k) - expected).abs() < expected * 0.05,
                "rank {k}: {} vs {expected}",
                share(k)
            );
        }
        assert!(counts.iter().all(|c| *c > 0), "{counts:?}");
        // The extremes of the hash land on the first and the last rank.
        assert_eq!(zipf.sample(0), 0);
        assert_eq!(zipf.sample(u64::MAX), 99);
    }

    #[test]
    fn zipf_skew_zero_is_uniform_and_higher_skew_is_hotter() {
        let uniform = Zipf::new(4, 0.0);
        let mut counts = [0u64; 4];
        for i in 0..400_000 {
            counts[uniform.sample(splitmix(i))] += 1;
        }
        assert!(
            counts.iter().all(|c| (95_000..105_000).contains(c)),
            "{counts:?}"
        );
        let hot = |skew: f64| {
            let z = Zipf::new(1000, skew);
            (0..100_000).filter(|i| z.sample(splitmix(*i)) == 0).count()
        };
        assert!(hot(2.0) > hot(1.0) && hot(1.0) > hot(0.5));
    }

    #[test]
    fn with_enough_clients_every_stream_is_watched_and_the_rest_go_to_hot_streams() {
        let assigned = client_streams(10, 4, 1.0);
        assert_eq!(assigned.len(), 10);
        let mut per_stream = [0usize; 4];
        for s in &assigned {
            per_stream[*s] += 1;
        }
        assert!(per_stream.iter().all(|n| *n >= 1), "{per_stream:?}");
        // Weights 1, 1/2, 1/3, 1/4 with one seat each already: the hottest has the most, and
        // no stream has more than a hotter one.
        assert!(
            per_stream.windows(2).all(|w| w[0] >= w[1]),
            "{per_stream:?}"
        );
        assert!(per_stream[0] > per_stream[3], "{per_stream:?}");
        assert_eq!(
            client_streams(1000, 1000, 1.0),
            (0..1000).collect::<Vec<_>>()
        );
        // Shares 6/11, 3/11, 2/11 of 6 clients: 3.3, 1.6, 1.1.
        assert_eq!(client_streams(6, 3, 1.0), vec![0, 1, 2, 0, 0, 1]);
        // Skew 0: even.
        assert_eq!(client_streams(6, 3, 0.0), vec![0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn with_few_clients_the_hot_streams_are_watched() {
        let assigned = client_streams(5, 1000, 1.0);
        assert_eq!(assigned.len(), 5);
        // Claims 1, 1/2, 1/3 (stream 0's second), 1/3, 1/4: the hottest four, stream 0 twice.
        assert_eq!(assigned, vec![0, 1, 0, 2, 3]);
        assert!(client_streams(0, 10, 1.0).is_empty());
        // One stream: every client on it.
        assert_eq!(client_streams(3, 1, 1.0), vec![0, 0, 0]);
    }
}
