//! The scaling rule: how many emojis to display for a count.

use std::num::NonZeroU64;

/// `scaled = ceil(count / per)`: with `per = 1000`, 1..=1000 reactions show one emoji and
/// 1001..=2000 show two. Zero reactions show none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScaleRule {
    /// Reactions per displayed emoji (default 1000).
    pub per: NonZeroU64,
}

impl Default for ScaleRule {
    fn default() -> Self {
        ScaleRule {
            per: NonZeroU64::new(1000).expect("1000 is not zero"),
        }
    }
}

impl ScaleRule {
    /// Emojis to display for `count` reactions.
    pub fn scale(&self, count: u64) -> u64 {
        count.div_ceil(self.per.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaling_boundaries() {
        let rule = ScaleRule::default();
        assert_eq!(rule.scale(0), 0);
        assert_eq!(rule.scale(1), 1);
        assert_eq!(rule.scale(1000), 1);
        assert_eq!(rule.scale(1001), 2);
        assert_eq!(rule.scale(2000), 2);
        assert_eq!(rule.scale(u64::MAX), u64::MAX / 1000 + 1);
        let every = ScaleRule {
            per: NonZeroU64::new(1).unwrap(),
        };
        assert_eq!(every.scale(7), 7);
    }
}
