//! Quota arithmetic, spelled once. Repositories make a quota check atomic with their write
//! (under a lock), but the decision itself — what counts, and whether it fits — is made
//! here, so every database (SQLite, PostgreSQL, the in-memory reference) decides alike.

/// Whether `used - freeing + adding` bytes fit `quota` (`None` = unlimited). `freeing` is
/// what the write replaces (a record's previous version, vector items re-written).
pub fn fits(quota: Option<i64>, used: i64, freeing: i64, adding: i64) -> bool {
    quota.is_none_or(|q| used.saturating_sub(freeing).saturating_add(adding) <= q)
}

/// The bytes counted against `cloud_storage_gb`. **Records and vector items share that one
/// quota**: this type is the home of that rule. A repository reads both sums under its
/// lock and asks [`CloudUsage::admits`]; nothing else adds them up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CloudUsage {
    /// Sum of the user's record sizes.
    pub records: i64,
    /// Sum of the user's vector item sizes.
    pub vectors: i64,
}

impl CloudUsage {
    /// Everything the user stores under `cloud_storage_gb`.
    pub fn total(self) -> i64 {
        self.records.saturating_add(self.vectors)
    }

    /// Whether replacing `freeing` stored bytes with `adding` stays within `quota`.
    pub fn admits(self, quota: Option<i64>, freeing: i64, adding: i64) -> bool {
        fits(quota, self.total(), freeing, adding)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_vectors_count_together() {
        let usage = CloudUsage {
            records: 60,
            vectors: 30,
        };
        assert!(usage.admits(Some(100), 0, 10));
        assert!(!usage.admits(Some(100), 0, 11));
        // Replacing 20 stored bytes frees them first.
        assert!(usage.admits(Some(100), 20, 30));
        assert!(!usage.admits(Some(100), 20, 31));
        assert!(usage.admits(None, 0, i64::MAX));
    }

    #[test]
    fn arithmetic_saturates_instead_of_wrapping() {
        assert!(!fits(Some(i64::MAX - 1), i64::MAX, 0, i64::MAX));
        assert!(fits(Some(0), i64::MIN, 0, 0));
    }
}
