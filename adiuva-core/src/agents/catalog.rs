//! The built-in agent types.

use crate::ports::db::AgentKind;
use crate::ports::providers::Provider;

/// One agent type (`GET /agents/catalog`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogItem {
    /// Its id (`inbox_triage`, `teams_digest`, `weekly_review`, `local_files`, …).
    pub agent_type: &'static str,
    /// Display name.
    pub name: &'static str,
    /// One sentence.
    pub description: &'static str,
    /// Local (reads the device) or cloud (reads a provider).
    pub kind: AgentKind,
    /// What it reads: local data types (`tasks`, `files`, `notes`, …) or sources
    /// (`gmail`, `outlook`, `teams`).
    pub reads: &'static [&'static str],
    /// Cloud: the providers it can read (the config's `provider` is one of them).
    pub providers: &'static [Provider],
    /// What it produces (`suggested_tasks`, `digest_note`, `report`, `checkpoint_proposals`…).
    pub produces: &'static [&'static str],
    /// Its default cron schedule (read in the config's zone, `UTC` by default).
    pub default_schedule: &'static str,
    /// The filters it understands, with a one-line description each.
    pub filters: &'static [(&'static str, &'static str)],
    /// Its default prompt template id (server-side text).
    pub prompt_template: &'static str,
}

impl CatalogItem {
    /// The OAuth scopes it needs per provider (empty for local agents).
    pub fn scopes(&self) -> Vec<(Provider, &'static [&'static str])> {
        self.providers.iter().map(|p| (*p, p.scopes())).collect()
    }
}

/// Every built-in type, in display order.
pub fn catalog() -> &'static [CatalogItem] {
    todo!("CONTRACT h-cfg: at least inbox_triage, teams_digest, weekly_review, local_files")
}

/// One type by id.
pub fn catalog_item(agent_type: &str) -> Option<&'static CatalogItem> {
    catalog().iter().find(|c| c.agent_type == agent_type)
}
