//! Which offset of a partition is safe to commit.
//!
//! A reaction is accounted for once the window it was counted in has been written to the
//! windows topic. Reactions arrive out of window order, so the safe offset is the first one
//! whose window is not yet durable; committing it means a restart re-reads exactly the
//! reactions of windows still open, and skips (as late) those of windows already emitted.

use std::collections::BTreeMap;

use dataflows::WindowId;

/// Read and commit progress of one partition.
#[derive(Debug, Default)]
pub struct PartitionProgress {
    /// For each window with counted reactions not yet durable: the first offset counted in it.
    pending: BTreeMap<WindowId, i64>,
    /// The offset after the last message read.
    next_offset: Option<i64>,
    /// The last offset committed.
    committed: Option<i64>,
}

impl PartitionProgress {
    /// Records a message read at `offset`; `counted_in` is the window it was counted in, if it
    /// was counted (late and invalid messages are not).
    pub fn read(&mut self, offset: i64, counted_in: Option<WindowId>) {
        if let Some(window) = counted_in {
            self.pending.entry(window).or_insert(offset);
        }
        self.next_offset = Some(offset + 1);
    }

    /// The offset the next message should have, if any was read.
    pub fn expected(&self) -> Option<i64> {
        self.next_offset
    }

    /// The offset to commit now that every window below `durable_below` is durable (`None`:
    /// all are), if it moved since the last commit.
    pub fn to_commit(&mut self, durable_below: Option<WindowId>) -> Option<i64> {
        match durable_below {
            Some(bound) => self.pending.retain(|window, _| *window >= bound),
            None => self.pending.clear(),
        }
        let safe = self.pending.values().min().copied().or(self.next_offset)?;
        if self.committed == Some(safe) {
            return None;
        }
        Some(safe)
    }

    /// Records a successful commit.
    pub fn committed(&mut self, offset: i64) {
        self.committed = Some(offset);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_up_to_the_first_reaction_of_an_open_window() {
        let mut p = PartitionProgress::default();
        assert_eq!(p.to_commit(Some(0)), None, "nothing read");
        p.read(0, Some(10));
        p.read(1, Some(11));
        p.read(2, Some(10));
        p.read(3, None);
        p.read(4, Some(12));
        assert_eq!(p.to_commit(Some(10)), Some(0), "window 10 still open");
        p.committed(0);
        assert_eq!(p.to_commit(Some(10)), None, "unchanged");
        assert_eq!(
            p.to_commit(Some(11)),
            Some(1),
            "10 durable, 11 open from offset 1"
        );
        assert_eq!(
            p.to_commit(Some(13)),
            Some(5),
            "all durable: everything read"
        );
        p.committed(5);
        p.read(5, None);
        assert_eq!(p.to_commit(None), Some(6));
    }
}
