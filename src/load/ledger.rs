//! What the load generator knows it sent, and the check of every received window against it.
//!
//! The ledger holds each accepted reaction by its event time (ms) and emoji. A window
//! `[start, end)` should carry exactly the ledger's reactions in that span: nothing else is
//! sending (the load generator must have the system to itself), and every reaction it counts
//! was accepted with a 202.

use std::collections::BTreeMap;

use serde::Serialize;

/// The emojis the load generator sends, most popular first (weights 1/rank).
pub const EMOJIS: [&str; 8] = ["🔥", "❤️", "😂", "👏", "😮", "😢", "🎉", "👍"];

/// Counts per emoji, indexed like [`EMOJIS`].
pub type Counts = [u64; EMOJIS.len()];

/// Accepted reactions by event time.
#[derive(Debug, Default, Clone)]
pub struct Ledger {
    by_ms: BTreeMap<i64, Counts>,
    reactions: u64,
}

impl Ledger {
    /// Records one accepted reaction.
    pub fn record(&mut self, ts_ms: i64, emoji: usize) {
        if let Some(count) = self.by_ms.entry(ts_ms).or_default().get_mut(emoji) {
            *count += 1;
            self.reactions += 1;
        }
    }

    /// Adds another ledger's reactions.
    pub fn absorb(&mut self, other: Ledger) {
        for (ts, counts) in other.by_ms {
            let mine = self.by_ms.entry(ts).or_default();
            for (m, c) in mine.iter_mut().zip(counts) {
                *m += c;
            }
        }
        self.reactions += other.reactions;
    }

    /// Reactions recorded.
    pub fn reactions(&self) -> u64 {
        self.reactions
    }

    /// The first and last event time recorded.
    pub fn span(&self) -> Option<(i64, i64)> {
        Some((*self.by_ms.keys().next()?, *self.by_ms.keys().next_back()?))
    }

    /// Reactions per emoji with event times in `[start_ms, end_ms)`.
    pub fn expected(&self, start_ms: i64, end_ms: i64) -> Counts {
        let mut sum = Counts::default();
        for counts in self.by_ms.range(start_ms..end_ms).map(|(_, c)| c) {
            for (s, c) in sum.iter_mut().zip(counts) {
                *s += c;
            }
        }
        sum
    }

    /// How many reactions were sent at each ms of `[start_ms, end_ms)`.
    pub fn times(&self, start_ms: i64, end_ms: i64) -> impl Iterator<Item = (i64, u64)> + '_ {
        self.by_ms
            .range(start_ms..end_ms)
            .map(|(ts, counts)| (*ts, counts.iter().sum()))
    }
}

/// A window as one client received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The window index.
    pub window: i64,
    /// Its first ms.
    pub start_ms: i64,
    /// Its first ms after.
    pub end_ms: i64,
    /// Its total.
    pub total: u64,
    /// Count per emoji, as received.
    pub counts: BTreeMap<String, u64>,
    /// Wall-clock ms when it arrived.
    pub at_ms: i64,
    /// It came as `event: resync` (the client had fallen behind).
    pub resync: bool,
}

/// What went wrong with one window on one client.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", tag = "problem")]
pub enum Problem {
    /// Never received.
    Lost,
    /// Received more than once.
    Doubled {
        /// How many times.
        times: usize,
    },
    /// Received with other counts than the ledger's.
    Wrong {
        /// The ledger's total.
        expected_total: u64,
        /// The received total.
        received_total: u64,
    },
}

/// One problem found.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Finding {
    /// The window index.
    pub window: i64,
    /// The client's position in the load generator's list.
    pub client: usize,
    /// What went wrong.
    #[serde(flatten)]
    pub problem: Problem,
}

/// The outcome of checking every client's windows against the ledger.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Check {
    /// The windows checked: from the one with the first accepted reaction to the one with the
    /// last, empty ones included.
    pub windows: u64,
    /// Window deliveries (window × client) checked.
    pub deliveries: u64,
    /// Deliveries with exactly the ledger's counts.
    pub exact: u64,
    /// Windows a client never received.
    pub lost: u64,
    /// Windows a client received more than once.
    pub doubled: u64,
    /// Windows received with counts other than the ledger's.
    pub wrong: u64,
    /// The first problems, for the report.
    pub findings: Vec<Finding>,
}

/// Findings kept for the report.
const FINDINGS_KEPT: usize = 20;

impl Check {
    /// Every delivery was exact, and there was something to check.
    pub fn is_exact(&self) -> bool {
        self.deliveries > 0 && self.exact == self.deliveries
    }

    fn found(&mut self, window: i64, client: usize, problem: Problem) {
        match problem {
            Problem::Lost => self.lost += 1,
            Problem::Doubled { .. } => self.doubled += 1,
            Problem::Wrong { .. } => self.wrong += 1,
        }
        if self.findings.len() < FINDINGS_KEPT {
            self.findings.push(Finding {
                window,
                client,
                problem,
            });
        }
    }
}

/// The windows the ledger spans, for windows of `window_ms`.
pub fn windows_spanned(ledger: &Ledger, window_ms: i64) -> Option<(i64, i64)> {
    let (first, last) = ledger.span()?;
    Some((first.div_euclid(window_ms), last.div_euclid(window_ms)))
}

/// Checks each client's receipts (one list per client) against the ledger.
pub fn check(ledger: &Ledger, window_ms: i64, clients: &[Vec<Receipt>]) -> Check {
    let mut check = Check::default();
    let Some((first, last)) = windows_spanned(ledger, window_ms) else {
        return check;
    };
    check.windows = (last - first + 1) as u64;
    for window in first..=last {
        let (start, end) = (window * window_ms, (window + 1) * window_ms);
        let expected = ledger.expected(start, end);
        let expected_total: u64 = expected.iter().sum();
        for (client, receipts) in clients.iter().enumerate() {
            check.deliveries += 1;
            let mut got = receipts.iter().filter(|r| r.window == window);
            let Some(receipt) = got.next() else {
                check.found(window, client, Problem::Lost);
                continue;
            };
            let times = 1 + got.count();
            if times > 1 {
                check.found(window, client, Problem::Doubled { times });
            } else if !matches(receipt, &expected) || receipt.total != expected_total {
                check.found(
                    window,
                    client,
                    Problem::Wrong {
                        expected_total,
                        received_total: receipt.total,
                    },
                );
            } else {
                check.exact += 1;
            }
        }
    }
    check
}

/// The receipt names exactly the ledger's emojis with the ledger's counts.
fn matches(receipt: &Receipt, expected: &Counts) -> bool {
    let sent = EMOJIS.iter().zip(expected).filter(|(_, n)| **n > 0).count();
    sent == receipt.counts.len()
        && EMOJIS
            .iter()
            .zip(expected)
            .filter(|(_, n)| **n > 0)
            .all(|(emoji, n)| receipt.counts.get(*emoji) == Some(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt(window: i64, counts: &[(&str, u64)]) -> Receipt {
        Receipt {
            window,
            start_ms: window * 2000,
            end_ms: (window + 1) * 2000,
            total: counts.iter().map(|(_, n)| n).sum(),
            counts: counts.iter().map(|(e, n)| (e.to_string(), *n)).collect(),
            at_ms: (window + 1) * 2000 + 1500,
            resync: false,
        }
    }

    fn ledger() -> Ledger {
        let mut ledger = Ledger::default();
        ledger.record(10_100, 0); // window 5
        ledger.record(10_200, 0);
        ledger.record(11_999, 1);
        ledger.record(16_000, 2); // window 8; 6 and 7 empty
        ledger
    }

    #[test]
    fn exact_windows_pass_and_empty_windows_are_checked() {
        let ledger = ledger();
        let client = vec![
            receipt(4, &[("🔥", 99)]), // before the run: not checked
            receipt(5, &[("🔥", 2), ("❤️", 1)]),
            receipt(6, &[]),
            receipt(7, &[]),
            receipt(8, &[("😂", 1)]),
        ];
        let check = check(&ledger, 2000, &[client.clone(), client]);
        assert_eq!(check.windows, 4);
        assert_eq!(check.deliveries, 8);
        assert_eq!(check.exact, 8);
        assert!(check.is_exact());
    }

    #[test]
    fn lost_doubled_and_wrong_windows_are_found() {
        let ledger = ledger();
        let good = vec![
            receipt(5, &[("🔥", 2), ("❤️", 1)]),
            receipt(6, &[]),
            receipt(7, &[]),
            receipt(8, &[("😂", 1)]),
        ];
        let bad = vec![
            receipt(5, &[("🔥", 3), ("❤️", 1)]), // wrong count
            receipt(6, &[]),
            receipt(6, &[]),                     // doubled
            receipt(8, &[("😂", 1), ("👍", 1)]), // an emoji nobody sent; 7 lost
        ];
        let check = check(&ledger, 2000, &[good, bad]);
        assert_eq!(check.exact, 4);
        assert_eq!((check.lost, check.doubled, check.wrong), (1, 1, 2));
        assert!(!check.is_exact());
        assert_eq!(
            check.findings[0],
            Finding {
                window: 5,
                client: 1,
                problem: Problem::Wrong {
                    expected_total: 3,
                    received_total: 4
                }
            }
        );
    }

    #[test]
    fn nothing_sent_is_not_exact() {
        assert!(!check(&Ledger::default(), 2000, &[vec![]]).is_exact());
    }

    #[test]
    fn ledgers_absorb_and_sum_spans() {
        let mut a = ledger();
        let mut b = Ledger::default();
        b.record(10_100, 0);
        a.absorb(b);
        assert_eq!(a.reactions(), 5);
        assert_eq!(a.expected(10_000, 12_000), [3, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            a.times(10_000, 12_000).collect::<Vec<_>>(),
            vec![(10_100, 2), (10_200, 1), (11_999, 1)]
        );
    }
}
