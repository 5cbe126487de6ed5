//! A token bucket: background work (anti-entropy's store walks and the
//! objects it sends) spends tokens that refill at a set rate, so it never
//! takes more than its share of the disk and the network from client
//! requests, however far replicas have drifted apart.
//!
//! Time comes in as an argument (the core's monotonic milliseconds). The
//! bucket holds at most one second's worth of tokens, so an idle spell does
//! not buy a burst larger than the rate. Spending may overdraw it (one
//! object larger than a second's worth must still go); work waits until the
//! debt is paid back.

/// Tokens refilled at `per_s` a second, holding at most `per_s`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBucket {
    per_s: u64,
    /// Tokens held, times 1,000 (so a millisecond's refill is exact);
    /// negative while in debt.
    milli_tokens: i128,
    /// When it was last refilled; `None` until first used.
    last_ms: Option<u64>,
}

impl TokenBucket {
    /// A full bucket refilled at `per_s` tokens a second (at least 1).
    pub fn new(per_s: u64) -> TokenBucket {
        let per_s = per_s.max(1);
        TokenBucket {
            per_s,
            milli_tokens: i128::from(per_s) * 1_000,
            last_ms: None,
        }
    }

    /// The refill rate, tokens a second.
    pub fn per_s(&self) -> u64 {
        self.per_s
    }

    /// Adds what accrued since the last refill, up to a full bucket.
    pub fn refill(&mut self, now_ms: u64) {
        let elapsed = self.last_ms.map_or(0, |last| now_ms.saturating_sub(last));
        self.last_ms = Some(now_ms);
        let full = i128::from(self.per_s) * 1_000;
        let accrued = i128::from(elapsed) * i128::from(self.per_s);
        self.milli_tokens = (self.milli_tokens + accrued).min(full);
    }

    /// Whole tokens that may be spent now (0 while in debt).
    pub fn available(&self) -> u64 {
        u64::try_from(self.milli_tokens.max(0) / 1_000).unwrap_or(u64::MAX)
    }

    /// Spends `tokens`, overdrawing if they are more than held.
    pub fn spend(&mut self, tokens: u64) {
        self.milli_tokens -= i128::from(tokens) * 1_000;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spending_is_limited_to_the_rate_over_time() {
        let mut bucket = TokenBucket::new(1_000);
        bucket.refill(0);
        let mut spent = 0;
        // Ten seconds of greedy spending in 10 ms steps.
        for ms in (0..=10_000).step_by(10) {
            bucket.refill(ms);
            let take = bucket.available();
            bucket.spend(take);
            spent += take;
        }
        // One second's burst plus ten seconds' refill.
        assert_eq!(spent, 11_000);
    }

    #[test]
    fn an_idle_spell_buys_at_most_one_seconds_worth() {
        let mut bucket = TokenBucket::new(500);
        bucket.refill(0);
        bucket.spend(500);
        bucket.refill(3_600_000);
        assert_eq!(bucket.available(), 500);
    }

    #[test]
    fn debt_is_paid_back_before_more_is_available() {
        let mut bucket = TokenBucket::new(100);
        bucket.refill(0);
        bucket.spend(300);
        assert_eq!(bucket.available(), 0);
        bucket.refill(1_999);
        assert_eq!(bucket.available(), 0, "still 0.1 tokens in debt");
        bucket.refill(2_010);
        assert_eq!(bucket.available(), 1);
    }

    #[test]
    fn a_zero_rate_still_moves() {
        let mut bucket = TokenBucket::new(0);
        bucket.refill(0);
        assert_eq!(bucket.per_s(), 1);
        assert_eq!(bucket.available(), 1);
    }
}
