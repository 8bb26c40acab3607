//! What the load generator knows it sent, and the check of every received window against it.
//!
//! The ledger holds each accepted reaction by stream, event time (ms) and emoji. A window
//! `[start, end)` of stream `s` should carry exactly the ledger's reactions of `s` in that
//! span: nothing else is sending (the load generator must have the system to itself), and
//! every reaction it counts was accepted with a 202.
//!
//! One ledger serves every client: clients of a stream are checked against that stream's
//! counts, computed once per window, so memory grows with the reactions sent, not with the
//! clients.

use std::collections::BTreeMap;

use serde::Serialize;

/// The emojis the load generator sends, most popular first (weights 1/rank).
pub const EMOJIS: [&str; 8] = ["🔥", "❤️", "😂", "👏", "😮", "😢", "🎉", "👍"];

/// Counts per emoji, indexed like [`EMOJIS`].
pub type Counts = [u64; EMOJIS.len()];

/// Accepted reactions of one ms and one emoji on one stream. 16 bytes: at 200k reactions/s
/// over 1000 streams most (stream, ms, emoji) hold one reaction, so a per-ms array of every
/// emoji would be mostly zeros.
#[derive(Debug, Clone, Copy)]
struct Mark {
    ts: i64,
    n: u32,
    /// The emoji's index, with [`LATE`] set for reactions sent late (stamped in the past).
    emoji: u8,
}

/// The bit of [`Mark::emoji`] that marks late reactions: they count in their window like the
/// others, but their send time is not their event time.
const LATE: u8 = 0x80;

/// One stream's marks, in event-time order.
#[derive(Debug, Default, Clone)]
struct Marks {
    marks: Vec<Mark>,
    reactions: u64,
}

impl Marks {
    fn record(&mut self, ts: i64, emoji: u8, n: u32) {
        self.reactions += u64::from(n);
        let end = self.marks.len();
        // A sender's clock only moves forward, so this is nearly always the last few marks;
        // a wall clock stepped back puts the mark in its place instead.
        let at = match self.marks.last() {
            Some(last) if last.ts > ts => self.marks.partition_point(|m| m.ts <= ts),
            _ => end,
        };
        let same_ms = self.marks[..at].iter().rev().take_while(|m| m.ts == ts);
        if let Some(offset) = same_ms
            .enumerate()
            .find(|(_, m)| m.emoji == emoji)
            .map(|(i, _)| i)
        {
            let mark = &mut self.marks[at - 1 - offset];
            mark.n = mark.n.saturating_add(n);
        } else {
            self.marks.insert(at, Mark { ts, n, emoji });
        }
    }

    fn range(&self, start_ms: i64, end_ms: i64) -> &[Mark] {
        let from = self.marks.partition_point(|m| m.ts < start_ms);
        let to = self.marks.partition_point(|m| m.ts < end_ms);
        &self.marks[from..to.max(from)]
    }
}

/// Accepted reactions by stream (its rank in the run's list of streams) and event time.
#[derive(Debug, Default, Clone)]
pub struct Ledger {
    streams: Vec<Marks>,
    reactions: u64,
}

impl Ledger {
    /// Records one accepted reaction.
    pub fn record(&mut self, stream: usize, ts_ms: i64, emoji: usize) {
        self.record_n(stream, ts_ms, emoji, 1);
    }

    /// Records `n` accepted reactions of one stream, ms and emoji.
    pub fn record_n(&mut self, stream: usize, ts_ms: i64, emoji: usize, n: u32) {
        self.record_as(stream, ts_ms, emoji, n, false);
    }

    /// Records one accepted reaction sent late: stamped `ts_ms`, in the past.
    pub fn record_late(&mut self, stream: usize, ts_ms: i64, emoji: usize) {
        self.record_as(stream, ts_ms, emoji, 1, true);
    }

    fn record_as(&mut self, stream: usize, ts_ms: i64, emoji: usize, n: u32, late: bool) {
        if emoji >= EMOJIS.len() || n == 0 {
            return;
        }
        if self.streams.len() <= stream {
            self.streams.resize_with(stream + 1, Marks::default);
        }
        // `emoji` < 8 (checked above) fits a byte, below the late bit.
        let emoji = emoji as u8 | if late { LATE } else { 0 };
        self.streams[stream].record(ts_ms, emoji, n);
        self.reactions += u64::from(n);
    }

    /// Adds another ledger's reactions.
    pub fn absorb(&mut self, other: Ledger) {
        if self.streams.len() < other.streams.len() {
            self.streams
                .resize_with(other.streams.len(), Marks::default);
        }
        for (mine, theirs) in self.streams.iter_mut().zip(other.streams) {
            if mine.marks.is_empty() {
                *mine = theirs;
                continue;
            }
            mine.reactions += theirs.reactions;
            mine.marks.extend(theirs.marks);
            // Two sorted runs: the stable sort merges them in linear time. Marks of the same
            // (ms, emoji) from two senders stay two marks; sums do not care.
            mine.marks.sort_by_key(|m| m.ts);
        }
        self.reactions += other.reactions;
    }

    /// Reactions recorded.
    pub fn reactions(&self) -> u64 {
        self.reactions
    }

    /// Reactions recorded on `stream`.
    pub fn stream_reactions(&self, stream: usize) -> u64 {
        self.streams.get(stream).map_or(0, |s| s.reactions)
    }

    /// The first and last event time recorded, over every stream.
    pub fn span(&self) -> Option<(i64, i64)> {
        let spans = (0..self.streams.len()).filter_map(|s| self.stream_span(s));
        spans.reduce(|(a, b), (c, d)| (a.min(c), b.max(d)))
    }

    /// The first and last event time recorded on `stream`.
    pub fn stream_span(&self, stream: usize) -> Option<(i64, i64)> {
        let marks = &self.streams.get(stream)?.marks;
        Some((marks.first()?.ts, marks.last()?.ts))
    }

    /// Reactions of `stream` per emoji with event times in `[start_ms, end_ms)`.
    pub fn expected(&self, stream: usize, start_ms: i64, end_ms: i64) -> Counts {
        let mut sum = Counts::default();
        if let Some(s) = self.streams.get(stream) {
            for m in s.range(start_ms, end_ms) {
                sum[usize::from(m.emoji & !LATE)] += u64::from(m.n);
            }
        }
        sum
    }

    /// Reactions of `stream` sent at ms of `[start_ms, end_ms)`, as (ms, count); one ms may
    /// come more than once. Late reactions are left out: they were sent after that ms.
    pub fn times(
        &self,
        stream: usize,
        start_ms: i64,
        end_ms: i64,
    ) -> impl Iterator<Item = (i64, u64)> + '_ {
        let marks = match self.streams.get(stream) {
            Some(s) => s.range(start_ms, end_ms),
            None => &[],
        };
        marks
            .iter()
            .filter(|m| m.emoji & LATE == 0)
            .map(|m| (m.ts, u64::from(m.n)))
    }

    /// The windows of `window_ms` in which `stream` had reactions, in order.
    fn reaction_windows(&self, stream: usize, window_ms: i64) -> Vec<i64> {
        let mut windows: Vec<i64> = Vec::new();
        if let Some(s) = self.streams.get(stream) {
            for m in &s.marks {
                let w = m.ts.div_euclid(window_ms);
                if windows.last() != Some(&w) {
                    windows.push(w);
                }
            }
        }
        windows
    }

    /// The windows `stream` should get, for windows of `window_ms` and the idle rule
    /// (`idle_windows` after each window with reactions): from its first reaction's window
    /// to its last's, skipping the gaps in which it was idle (the system emits none there).
    pub fn expected_windows(&self, stream: usize, window_ms: i64, idle_windows: u64) -> Vec<i64> {
        let reacted = self.reaction_windows(stream, window_ms);
        let idle = i64::try_from(idle_windows).unwrap_or(i64::MAX);
        let mut expected = Vec::new();
        for pair in reacted.windows(2) {
            let (from, next) = (pair[0], pair[1]);
            let quiet_until = from.saturating_add(idle).min(next - 1);
            expected.extend(from..=quiet_until);
        }
        expected.extend(reacted.last());
        expected
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
    /// 0 as first emitted; each correction of the window counts one up.
    pub revision: u32,
    /// It came as `event: correction`: the window again, changed by late reactions.
    pub correction: bool,
}

/// What one client received on the stream it follows.
#[derive(Debug, Clone, Default)]
pub struct Inbox {
    /// The stream it follows (its rank in the run's list).
    pub stream: usize,
    /// The windows of that stream, in the order they came.
    pub receipts: Vec<Receipt>,
    /// Windows of another stream: only counted (a client handed every stream's windows would
    /// otherwise hold them all).
    pub other_streams: u64,
    /// The first of those: its stream and window.
    pub first_other: Option<(String, i64)>,
}

impl Inbox {
    /// An empty inbox for a client of `stream`.
    pub fn new(stream: usize) -> Inbox {
        Inbox {
            stream,
            ..Inbox::default()
        }
    }

    /// Takes a window that names `stream_id`, for a client following `followed`.
    pub fn receive(&mut self, stream_id: &str, followed: &str, receipt: Receipt) {
        if stream_id == followed {
            self.receipts.push(receipt);
        } else {
            self.other_streams += 1;
            if self.first_other.is_none() {
                self.first_other = Some((stream_id.to_owned(), receipt.window));
            }
        }
    }
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
    /// Windows of another stream arrived on the client (the finding's window is the first).
    OtherStream {
        /// The stream the first of them named.
        stream_id: String,
        /// How many arrived.
        times: u64,
    },
}

/// One problem found.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Finding {
    /// The window index.
    pub window: i64,
    /// The client's position in the load generator's list.
    pub client: usize,
    /// The stream the client follows.
    pub stream_id: String,
    /// What went wrong.
    #[serde(flatten)]
    pub problem: Problem,
}

/// The check of one stream's windows over the clients that follow it.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct StreamCheck {
    /// Clients following the stream.
    pub clients: usize,
    /// Windows checked: from the stream's first accepted reaction's to its last's, empty ones
    /// included, idle gaps (no windows by the idle rule) left out.
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
    /// Windows of another stream its clients received.
    pub other_stream: u64,
}

impl StreamCheck {
    /// Something was wrong on this stream.
    pub fn has_problems(&self) -> bool {
        self.lost + self.doubled + self.wrong + self.other_stream > 0
    }
}

/// The outcome of checking every client's windows against the ledger.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Check {
    /// The windows checked, summed over the streams followed by at least one client (see
    /// [`StreamCheck::windows`]).
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
    /// Windows of another stream than the client follows.
    pub other_stream: u64,
    /// The first problems, for the report.
    pub findings: Vec<Finding>,
    /// Per stream, indexed like the run's streams (the report carries them with their names).
    #[serde(skip)]
    pub streams: Vec<StreamCheck>,
}

/// Findings kept for the report.
const FINDINGS_KEPT: usize = 20;

impl Check {
    /// Every delivery was exact, no window of another stream came, and there was something
    /// to check.
    pub fn is_exact(&self) -> bool {
        self.deliveries > 0 && self.exact == self.deliveries && self.other_stream == 0
    }

    fn found(&mut self, window: i64, client: usize, stream: (usize, &str), problem: Problem) {
        let s = &mut self.streams[stream.0];
        let (overall, per_stream, n) = match &problem {
            Problem::Lost => (&mut self.lost, &mut s.lost, 1),
            Problem::Doubled { .. } => (&mut self.doubled, &mut s.doubled, 1),
            Problem::Wrong { .. } => (&mut self.wrong, &mut s.wrong, 1),
            Problem::OtherStream { times, .. } => {
                (&mut self.other_stream, &mut s.other_stream, *times)
            }
        };
        *overall += n;
        *per_stream += n;
        if self.findings.len() < FINDINGS_KEPT {
            self.findings.push(Finding {
                window,
                client,
                stream_id: stream.1.to_owned(),
                problem,
            });
        }
    }
}

/// Checks each client's inbox against the ledger, for windows of `window_ms` and the idle
/// rule's `idle_windows`. `names` are the run's streams, indexed like the ledger's; a stream
/// no client follows is not checked.
pub fn check(
    ledger: &Ledger,
    names: &[String],
    window_ms: i64,
    idle_windows: u64,
    clients: &[Inbox],
) -> Check {
    let mut check = Check {
        streams: vec![StreamCheck::default(); names.len()],
        ..Check::default()
    };
    let mut followers: Vec<Vec<usize>> = vec![Vec::new(); names.len()];
    for (client, inbox) in clients.iter().enumerate() {
        if let Some(f) = followers.get_mut(inbox.stream) {
            f.push(client);
        }
    }
    for (stream, (name, followed_by)) in names.iter().zip(&followers).enumerate() {
        check.streams[stream].clients = followed_by.len();
        if followed_by.is_empty() {
            continue;
        }
        // Each client's windows by index: how often each came (as a window or a resync), and
        // the copy it ends with (the highest revision, corrections included).
        let by_window: Vec<BTreeMap<i64, (usize, &Receipt)>> = followed_by
            .iter()
            .map(|c| {
                let mut m: BTreeMap<i64, (usize, &Receipt)> = BTreeMap::new();
                for r in &clients[*c].receipts {
                    let entry = m.entry(r.window).or_insert((0, r));
                    if !r.correction {
                        entry.0 += 1;
                    }
                    if r.revision > entry.1.revision {
                        entry.1 = r;
                    }
                }
                m
            })
            .collect();
        let windows = ledger.expected_windows(stream, window_ms, idle_windows);
        check.windows += windows.len() as u64;
        check.streams[stream].windows = windows.len() as u64;
        for window in windows {
            let (start, end) = (window * window_ms, (window + 1) * window_ms);
            let expected = ledger.expected(stream, start, end);
            let expected_total: u64 = expected.iter().sum();
            for (client, received) in followed_by.iter().zip(&by_window) {
                check.deliveries += 1;
                check.streams[stream].deliveries += 1;
                let problem = match received.get(&window) {
                    None => Problem::Lost,
                    // A window first emitted by a correction (its stream had no reaction of
                    // its own there) came once, as that correction.
                    Some((0, r)) if !r.correction => Problem::Lost,
                    Some((times, _)) if *times > 1 => Problem::Doubled { times: *times },
                    Some((_, r)) if r.total != expected_total || !matches(r, &expected) => {
                        Problem::Wrong {
                            expected_total,
                            received_total: r.total,
                        }
                    }
                    Some(_) => {
                        check.exact += 1;
                        check.streams[stream].exact += 1;
                        continue;
                    }
                };
                check.found(window, *client, (stream, name), problem);
            }
        }
    }
    for (client, inbox) in clients.iter().enumerate() {
        if let (Some((other, window)), Some(name)) = (&inbox.first_other, names.get(inbox.stream)) {
            let problem = Problem::OtherStream {
                stream_id: other.clone(),
                times: inbox.other_streams,
            };
            check.found(*window, client, (inbox.stream, name), problem);
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
            revision: 0,
            correction: false,
        }
    }

    fn correction(window: i64, revision: u32, counts: &[(&str, u64)]) -> Receipt {
        Receipt {
            revision,
            correction: true,
            ..receipt(window, counts)
        }
    }

    #[test]
    fn corrections_are_checked_by_the_final_revision() {
        let mut ledger = ledger();
        ledger.record(0, 10_300, 0); // a late 🔥 for window 5
        let corrected = vec![
            receipt(5, &[("🔥", 2), ("❤️", 1)]),
            receipt(6, &[]),
            correction(5, 1, &[("🔥", 3), ("❤️", 1)]),
            receipt(7, &[]),
            receipt(8, &[("😂", 1)]),
        ];
        let uncorrected: Vec<Receipt> = corrected
            .iter()
            .filter(|r| !r.correction)
            .cloned()
            .collect();
        // A replayed correction (after a resume) is not a second delivery.
        let mut replayed = corrected.clone();
        replayed.insert(3, correction(5, 1, &[("🔥", 3), ("❤️", 1)]));
        let check = check(
            &ledger,
            &names(1),
            2000,
            30,
            &[
                inbox(0, corrected),
                inbox(0, uncorrected),
                inbox(0, replayed),
            ],
        );
        assert_eq!(
            (check.deliveries, check.exact, check.wrong, check.doubled),
            (12, 11, 1, 0)
        );
        assert_eq!(
            check.findings[0].client, 1,
            "the client without the correction is wrong"
        );
    }

    fn inbox(stream: usize, receipts: Vec<Receipt>) -> Inbox {
        Inbox {
            receipts,
            ..Inbox::new(stream)
        }
    }

    fn names(n: usize) -> Vec<String> {
        super::super::spread::stream_names(n)
    }

    fn ledger() -> Ledger {
        let mut ledger = Ledger::default();
        ledger.record(0, 10_100, 0); // window 5
        ledger.record(0, 10_200, 0);
        ledger.record(0, 11_999, 1);
        ledger.record(0, 16_000, 2); // window 8; 6 and 7 empty
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
        let check = check(
            &ledger,
            &names(1),
            2000,
            30,
            &[inbox(0, client.clone()), inbox(0, client)],
        );
        assert_eq!(check.windows, 4);
        assert_eq!(check.deliveries, 8);
        assert_eq!(check.exact, 8);
        assert!(check.is_exact());
        assert_eq!(check.streams[0].clients, 2);
        assert!(!check.streams[0].has_problems());
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
        let check = check(
            &ledger,
            &names(1),
            2000,
            30,
            &[inbox(0, good), inbox(0, bad)],
        );
        assert_eq!(check.exact, 4);
        assert_eq!((check.lost, check.doubled, check.wrong), (1, 1, 2));
        assert_eq!(
            (check.streams[0].lost, check.streams[0].wrong),
            (1, 2),
            "the stream's figures add up like the run's"
        );
        assert!(!check.is_exact());
        assert_eq!(
            check.findings[0],
            Finding {
                window: 5,
                client: 1,
                stream_id: "default".into(),
                problem: Problem::Wrong {
                    expected_total: 3,
                    received_total: 4
                }
            }
        );
    }

    #[test]
    fn nothing_sent_is_not_exact() {
        assert!(!check(&Ledger::default(), &names(1), 2000, 30, &[inbox(0, vec![])]).is_exact());
    }

    #[test]
    fn each_stream_is_checked_against_its_own_counts() {
        let mut ledger = Ledger::default();
        ledger.record(0, 10_100, 0); // load-0, window 5
        ledger.record(0, 10_150, 0);
        ledger.record(1, 10_100, 1); // load-1, window 5
        ledger.record(1, 12_500, 1); // load-1, window 6
        ledger.record(2, 12_000, 3); // load-2: nobody follows it
        let names = names(3);
        let clients = [
            inbox(0, vec![receipt(5, &[("🔥", 2)])]),
            inbox(1, vec![receipt(5, &[("❤️", 1)]), receipt(6, &[("❤️", 1)])]),
            // load-1's counts on a load-0 client: wrong, though another stream has them.
            inbox(0, vec![receipt(5, &[("❤️", 1)])]),
            // load-1's window 6 missing on this one.
            inbox(1, vec![receipt(5, &[("❤️", 1)])]),
        ];
        let check = check(&ledger, &names, 2000, 30, &clients);
        assert_eq!(
            check.windows,
            1 + 2,
            "load-0 one window, load-1 two, load-2 unchecked"
        );
        assert_eq!(check.deliveries, 2 + 2 * 2);
        assert_eq!(check.exact, 1 + 3);
        assert_eq!((check.wrong, check.lost), (1, 1));
        let (s0, s1, s2) = (&check.streams[0], &check.streams[1], &check.streams[2]);
        assert_eq!((s0.clients, s0.windows, s0.exact, s0.wrong), (2, 1, 1, 1));
        assert_eq!((s1.clients, s1.windows, s1.exact, s1.lost), (2, 2, 3, 1));
        assert_eq!((s2.clients, s2.windows, s2.deliveries), (0, 0, 0));
        assert!(s0.has_problems() && s1.has_problems() && !s2.has_problems());
        assert_eq!(check.findings[1].stream_id, "load-1");
        assert_eq!(check.findings[1].problem, Problem::Lost);
        assert_eq!(check.findings[1].window, 6);
    }

    #[test]
    fn a_window_of_another_stream_is_an_error() {
        let mut ledger = Ledger::default();
        ledger.record(0, 10_100, 0);
        ledger.record(1, 10_100, 1);
        let names = names(2);
        let mut inbox = Inbox::new(0);
        inbox.receive("load-0", "load-0", receipt(5, &[("🔥", 1)]));
        inbox.receive("load-1", "load-0", receipt(5, &[("❤️", 1)]));
        inbox.receive("load-1", "load-0", receipt(6, &[]));
        // Only the followed stream's windows are kept: the rest are counted.
        assert_eq!(inbox.receipts.len(), 1);
        assert_eq!(inbox.other_streams, 2);
        let check = check(&ledger, &names, 2000, 30, &[inbox]);
        assert_eq!((check.deliveries, check.exact), (1, 1));
        assert_eq!(check.other_stream, 2);
        assert_eq!(check.streams[0].other_stream, 2);
        assert!(
            !check.is_exact(),
            "every delivery exact, but a foreign window came"
        );
        assert_eq!(
            check.findings,
            vec![Finding {
                window: 5,
                client: 0,
                stream_id: "load-0".into(),
                problem: Problem::OtherStream {
                    stream_id: "load-1".into(),
                    times: 2
                }
            }]
        );
    }

    #[test]
    fn idle_gaps_are_not_expected_and_the_windows_after_each_reaction_are() {
        let mut ledger = Ledger::default();
        ledger.record(0, 2_000, 0); // window 1
        ledger.record(0, 9_000, 0); // window 4: 2 and 3 within the idle rule
        ledger.record(0, 20_000, 0); // window 10: 5 and 6 follow 4, 7..=9 idle
        assert_eq!(
            ledger.expected_windows(0, 2000, 2),
            vec![1, 2, 3, 4, 5, 6, 10]
        );
        assert_eq!(
            ledger.expected_windows(0, 2000, 30),
            (1..=10).collect::<Vec<_>>()
        );
        assert!(ledger.expected_windows(1, 2000, 30).is_empty());
        // A client that got exactly the windows the idle rule emits is exact.
        let got: Vec<Receipt> = [1, 2, 3, 4, 5, 6, 10]
            .iter()
            .map(|w| match w {
                1 | 4 | 10 => receipt(*w, &[("🔥", 1)]),
                _ => receipt(*w, &[]),
            })
            .collect();
        let check = check(&ledger, &names(1), 2000, 2, &[inbox(0, got)]);
        assert!(check.is_exact(), "{check:?}");
        assert_eq!(check.windows, 7);
    }

    #[test]
    fn ledgers_absorb_and_sum_spans() {
        let mut a = ledger();
        let mut b = Ledger::default();
        b.record(0, 10_100, 0);
        b.record(0, 10_000, 1);
        b.record(3, 9_000, 1);
        a.absorb(b);
        assert_eq!(a.reactions(), 7);
        assert_eq!(a.stream_reactions(0), 6);
        assert_eq!(a.stream_reactions(3), 1);
        assert_eq!(a.expected(0, 10_000, 12_000), [3, 2, 0, 0, 0, 0, 0, 0]);
        assert_eq!(a.expected(3, 0, 100_000), [0, 1, 0, 0, 0, 0, 0, 0]);
        let mut times: Vec<_> = a.times(0, 10_000, 12_000).collect();
        times.sort();
        assert_eq!(
            times,
            // 10_100 from each ledger: two marks, not merged.
            vec![
                (10_000, 1),
                (10_100, 1),
                (10_100, 1),
                (10_200, 1),
                (11_999, 1)
            ]
        );
        assert_eq!(a.span(), Some((9_000, 16_000)));
        assert_eq!(a.stream_span(0), Some((10_000, 16_000)));
    }

    #[test]
    fn one_ms_and_emoji_is_one_mark_and_a_clock_stepped_back_stays_in_order() {
        let mut ledger = Ledger::default();
        for emoji in [0, 1, 0, 1, 0] {
            ledger.record(0, 5_000, emoji);
        }
        ledger.record_n(0, 5_001, 2, 10);
        ledger.record(0, 4_000, 0); // the wall clock went back
        ledger.record(0, 5_000, 1);
        assert_eq!(ledger.streams[0].marks.len(), 4);
        assert!(ledger.streams[0]
            .marks
            .windows(2)
            .all(|w| w[0].ts <= w[1].ts));
        assert_eq!(ledger.expected(0, 5_000, 5_001), [3, 3, 0, 0, 0, 0, 0, 0]);
        assert_eq!(ledger.expected(0, 0, 10_000), [4, 3, 10, 0, 0, 0, 0, 0]);
        assert_eq!(ledger.reactions(), 17);
    }
}
