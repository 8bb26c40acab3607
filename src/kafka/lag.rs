//! Consumer lag from librdkafka's own statistics: the broker's high watermark of each partition
//! less the next offset this process will read.

use std::sync::Arc;

use rdkafka::consumer::ConsumerContext;
use rdkafka::{ClientContext, Statistics};

use crate::stats::Stats;

/// How often librdkafka reports statistics, in ms.
pub const STATISTICS_INTERVAL_MS: &str = "1000";

/// A consumer context that records each partition's lag in [`Stats`].
pub struct LagContext {
    /// Where the lag goes.
    pub stats: Arc<Stats>,
    /// The reactions topic.
    pub topic: String,
}

impl ClientContext for LagContext {
    fn stats(&self, statistics: Statistics) {
        let Some(topic) = statistics.topics.get(&self.topic) else {
            return;
        };
        for (id, partition) in &topic.partitions {
            if let (Some(counters), Some(lag)) = (self.stats.partition(*id), lag_of(partition)) {
                counters.lag.set(lag);
            }
        }
    }
}

impl ConsumerContext for LagContext {}

/// Unread messages of a partition this consumer fetches, if librdkafka knows both ends.
fn lag_of(partition: &rdkafka::statistics::Partition) -> Option<i64> {
    // librdkafka reports -1001 (an invalid offset) for what it does not know yet.
    let known = |offset: i64| offset >= 0;
    if !partition.desired || !known(partition.hi_offset) {
        return None;
    }
    let next = if known(partition.app_offset) {
        partition.app_offset
    } else if known(partition.committed_offset) {
        partition.committed_offset
    } else {
        partition.lo_offset.max(0)
    };
    Some((partition.hi_offset - next).max(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::statistics::Partition;

    fn partition(hi: i64, app: i64, committed: i64) -> Partition {
        Partition {
            desired: true,
            hi_offset: hi,
            app_offset: app,
            committed_offset: committed,
            lo_offset: 0,
            ..Partition::default()
        }
    }

    #[test]
    fn lag_is_high_watermark_less_next_offset() {
        assert_eq!(lag_of(&partition(100, 40, 10)), Some(60));
        // Nothing read yet: the consumer starts at the committed offset.
        assert_eq!(lag_of(&partition(100, -1001, 10)), Some(90));
        assert_eq!(lag_of(&partition(100, -1001, -1001)), Some(100));
        assert_eq!(lag_of(&partition(-1001, 5, 5)), None);
        let mut not_ours = partition(100, 40, 10);
        not_ours.desired = false;
        assert_eq!(lag_of(&not_ours), None);
    }
}
