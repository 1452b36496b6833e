//! The tier manager (plan step 11): what each billing tier may do. The tier comes from
//! the database — never from the client or the token: a request's tier is the one its
//! [`Principal`](crate::auth::Principal) read when it authenticated (one read per
//! request, fresh), and the gates below take that tier; the forms taking a `UserId` read
//! it themselves, for callers without a principal (admin commands, embedding).

use std::sync::Arc;

use crate::domain::{Tier, UserId};
use crate::error::Error;
use crate::ports::Database;

/// A gated capability of the plan's feature matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Feature {
    /// Configured agents (count).
    Agents,
    /// Active batch agents (count).
    BatchActive,
    /// Cloud records storage (GB).
    CloudStorageGb,
    /// Backup storage (GB).
    BackupGb,
    /// Connected providers (count).
    Providers,
    /// The batch builder.
    BatchBuilder,
    /// The plugin marketplace.
    PluginMarketplace,
    /// Single sign-on.
    Sso,
}

impl Feature {
    /// Every feature, in the plan's order.
    pub const ALL: [Feature; 8] = [
        Feature::Agents,
        Feature::BatchActive,
        Feature::CloudStorageGb,
        Feature::BackupGb,
        Feature::Providers,
        Feature::BatchBuilder,
        Feature::PluginMarketplace,
        Feature::Sso,
    ];

    /// The plan's key.
    pub fn as_str(self) -> &'static str {
        match self {
            Feature::Agents => "agents",
            Feature::BatchActive => "batch_active",
            Feature::CloudStorageGb => "cloud_storage_gb",
            Feature::BackupGb => "backup_gb",
            Feature::Providers => "providers",
            Feature::BatchBuilder => "batch_builder",
            Feature::PluginMarketplace => "plugin_marketplace",
            Feature::Sso => "sso",
        }
    }
}

/// A tier's allowance for one feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowance {
    /// A yes/no feature.
    Flag(bool),
    /// A numeric limit; `None` is the plan's `-1`, unlimited.
    Limit(Option<i64>),
}

impl Allowance {
    /// Whether the feature is available at all (a flag that is on, or a limit above 0).
    pub fn permits(self) -> bool {
        match self {
            Allowance::Flag(on) => on,
            Allowance::Limit(None) => true,
            Allowance::Limit(Some(n)) => n > 0,
        }
    }

    /// The plan's JSON value: a bool, a number, or -1 for unlimited.
    pub fn plan_value(self) -> serde_json::Value {
        match self {
            Allowance::Flag(on) => on.into(),
            Allowance::Limit(None) => (-1).into(),
            Allowance::Limit(Some(n)) => n.into(),
        }
    }
}

const UNLIMITED: Allowance = Allowance::Limit(None);
const fn limit(n: i64) -> Allowance {
    Allowance::Limit(Some(n))
}
const fn flag(on: bool) -> Allowance {
    Allowance::Flag(on)
}

/// The plan's feature matrix, exactly.
pub fn allowance(tier: Tier, feature: Feature) -> Allowance {
    use Feature::*;
    match (tier, feature) {
        (Tier::Free, Agents) => limit(3),
        (Tier::Free, BatchActive) => limit(2),
        (Tier::Free, CloudStorageGb | BackupGb) => limit(0),
        (Tier::Free, Providers) => limit(1),
        (Tier::Free, BatchBuilder | PluginMarketplace | Sso) => flag(false),

        (Tier::Pro, Agents | Providers) => UNLIMITED,
        (Tier::Pro, BatchActive) => limit(10),
        (Tier::Pro, CloudStorageGb | BackupGb) => limit(5),
        (Tier::Pro, BatchBuilder | PluginMarketplace | Sso) => flag(false),

        (Tier::Power, Agents | BatchActive | Providers) => UNLIMITED,
        (Tier::Power, CloudStorageGb | BackupGb) => limit(25),
        (Tier::Power, BatchBuilder | PluginMarketplace) => flag(true),
        (Tier::Power, Sso) => flag(false),

        (Tier::Team, Agents | BatchActive | Providers | CloudStorageGb | BackupGb) => UNLIMITED,
        (Tier::Team, BatchBuilder | PluginMarketplace | Sso) => flag(true),
    }
}

/// Requests per minute per user (per seat on `team`), plan step 9b.
pub fn rate_limit_per_minute(tier: Tier) -> u32 {
    match tier {
        Tier::Free => 20,
        Tier::Pro => 60,
        Tier::Power => 120,
        Tier::Team => 200,
    }
}

/// The cheapest tier on which `feature` is available.
pub fn cheapest_tier_with(feature: Feature) -> Tier {
    Tier::ALL
        .iter()
        .copied()
        .find(|t| allowance(*t, feature).permits())
        .unwrap_or(Tier::Team)
}

/// Bytes in the plan's "GB".
pub const GIB: i64 = 1024 * 1024 * 1024;

/// Decisions about what a tier allows: on a tier already read (a request's principal),
/// or reading the user's current tier first.
#[derive(Clone)]
pub struct TierManager {
    db: Arc<dyn Database>,
    gb_bytes: i64,
}

impl std::fmt::Debug for TierManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TierManager").finish_non_exhaustive()
    }
}

impl TierManager {
    /// A manager reading tiers from `db`, with 1 GiB per quota GB.
    pub fn new(db: Arc<dyn Database>) -> Self {
        Self { db, gb_bytes: GIB }
    }

    /// Counts `bytes` per quota GB instead (deployments that test quotas use small units).
    pub fn with_gb_bytes(mut self, bytes: i64) -> Self {
        self.gb_bytes = bytes.max(1);
        self
    }

    /// The user's current tier. An unknown user is `Unauthorized` (their token outlived them).
    pub async fn get_tier(&self, user_id: UserId) -> Result<Tier, Error> {
        self.db
            .user_by_id(user_id)
            .await?
            .map(|u| u.tier)
            .ok_or(Error::Unauthorized("the account no longer exists"))
    }

    /// Whether the user's tier has `feature` at all (reads the tier).
    pub async fn check_feature(&self, user_id: UserId, feature: Feature) -> Result<bool, Error> {
        Ok(allowance(self.get_tier(user_id).await?, feature).permits())
    }

    /// `Ok(())` if `tier` has `feature`, else 403 `tier_required` naming the cheapest
    /// tier that has it.
    pub fn require(tier: Tier, feature: Feature) -> Result<(), Error> {
        if allowance(tier, feature).permits() {
            return Ok(());
        }
        let needed = cheapest_tier_with(feature);
        Err(Error::Forbidden {
            code: "tier_required",
            detail: format!(
                "{} is not available on the {tier} tier; it requires the {needed} tier or above",
                feature.as_str()
            ),
        })
    }

    /// [`require`](Self::require) on the user's current tier (reads it); returns the tier.
    pub async fn require_feature(&self, user_id: UserId, feature: Feature) -> Result<Tier, Error> {
        let tier = self.get_tier(user_id).await?;
        Self::require(tier, feature)?;
        Ok(tier)
    }

    /// The user's request budget per minute (reads the tier).
    pub async fn get_rate_limit(&self, user_id: UserId) -> Result<u32, Error> {
        Ok(rate_limit_per_minute(self.get_tier(user_id).await?))
    }

    /// The byte quota of a GB feature on `tier` (`None` = unlimited), after checking the
    /// feature is available at all (403 `tier_required` if not).
    pub fn quota_bytes_on(&self, tier: Tier, feature: Feature) -> Result<Option<i64>, Error> {
        Self::require(tier, feature)?;
        Ok(match allowance(tier, feature) {
            Allowance::Limit(Some(gb)) => Some(gb.saturating_mul(self.gb_bytes)),
            _ => None,
        })
    }

    /// [`quota_bytes_on`](Self::quota_bytes_on) the user's current tier (reads it).
    pub async fn quota_bytes(
        &self,
        user_id: UserId,
        feature: Feature,
    ) -> Result<Option<i64>, Error> {
        self.quota_bytes_on(self.get_tier(user_id).await?, feature)
    }

    /// Whether `used + adding` bytes fit the quota; over → 403 `quota_exceeded`. Callers
    /// that write must make the check atomic with the write (the repositories'
    /// `*_within_quota` methods); this is for reporting and early refusal.
    pub fn check_quota(
        quota: Option<i64>,
        used: i64,
        adding: i64,
        feature: Feature,
    ) -> Result<(), Error> {
        match quota {
            Some(q) if !crate::quota::fits(quota, used, 0, adding) => Err(Error::Forbidden {
                code: "quota_exceeded",
                detail: format!(
                    "{} quota exceeded: {used} bytes stored, {adding} more requested, {q} allowed",
                    feature.as_str()
                ),
            }),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The plan's FEATURES dict, verbatim.
    fn plan() -> serde_json::Value {
        json!({
            "free": {"agents": 3, "batch_active": 2, "cloud_storage_gb": 0, "backup_gb": 0, "providers": 1,
                     "batch_builder": false, "plugin_marketplace": false, "sso": false},
            "pro": {"agents": -1, "batch_active": 10, "cloud_storage_gb": 5, "backup_gb": 5, "providers": -1,
                    "batch_builder": false, "plugin_marketplace": false, "sso": false},
            "power": {"agents": -1, "batch_active": -1, "cloud_storage_gb": 25, "backup_gb": 25, "providers": -1,
                      "batch_builder": true, "plugin_marketplace": true, "sso": false},
            "team": {"agents": -1, "batch_active": -1, "cloud_storage_gb": -1, "backup_gb": -1, "providers": -1,
                     "batch_builder": true, "plugin_marketplace": true, "sso": true},
        })
    }

    #[test]
    fn matrix_is_the_plans_exactly() {
        let plan = plan();
        for tier in Tier::ALL {
            for feature in Feature::ALL {
                assert_eq!(
                    allowance(*tier, feature).plan_value(),
                    plan[tier.as_str()][feature.as_str()],
                    "{tier} {}",
                    feature.as_str()
                );
            }
        }
    }

    #[test]
    fn cheapest_tiers_and_rate_limits() {
        assert_eq!(cheapest_tier_with(Feature::CloudStorageGb), Tier::Pro);
        assert_eq!(cheapest_tier_with(Feature::PluginMarketplace), Tier::Power);
        assert_eq!(cheapest_tier_with(Feature::Sso), Tier::Team);
        assert_eq!(cheapest_tier_with(Feature::Agents), Tier::Free);
        let limits: Vec<u32> = Tier::ALL
            .iter()
            .map(|t| rate_limit_per_minute(*t))
            .collect();
        assert_eq!(limits, [20, 60, 120, 200]);
    }

    #[test]
    fn quota_checks() {
        let q = Some(5 * GIB);
        assert!(TierManager::check_quota(q, 5 * GIB - 10, 10, Feature::CloudStorageGb).is_ok());
        let e = TierManager::check_quota(q, 5 * GIB - 10, 11, Feature::CloudStorageGb).unwrap_err();
        assert_eq!(e.code(), "quota_exceeded");
        assert!(TierManager::check_quota(None, i64::MAX, i64::MAX, Feature::BackupGb).is_ok());
    }
}
