//! Config CRUD (see the module docs of `agents`): every field validated into a 422 on
//! that field, the tier's limits handed to the repository (which checks them in the
//! writing statement, so two concurrent creates cannot both pass), `next_run_at`
//! computed here.

use serde_json::{Map, Value};
use uuid::Uuid;

use super::catalog::{self, CatalogItem};
use super::schedule::Schedule;
use super::tokens::open_tokens;
use super::{AgentInput, AgentPatch, AgentService, AgentView};
use crate::auth::Principal;
use crate::domain::{Millis, Tier};
use crate::error::Error;
use crate::ports::db::{AgentConfigRow, AgentKind, AgentLimits, AgentStatus, RepoError};
use crate::ports::providers::Provider;
use crate::tiers::{Allowance, Feature, allowance};

/// Most characters of a name.
const MAX_NAME_CHARS: usize = 100;
/// Most bytes of the filters as JSON.
const MAX_FILTERS_BYTES: usize = 4096;
/// Most characters of one filter value.
const MAX_FILTER_VALUE_CHARS: usize = 500;
/// Most bytes of the output as JSON.
const MAX_OUTPUT_BYTES: usize = 1024;
/// Most characters of `output.device_id`.
const MAX_DEVICE_ID_CHARS: usize = 128;
/// Most bytes of a sealed token we try to open (a real one is well under 4 KiB).
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Filters only one provider understands (the other's adapter would ignore them, so
/// accepting them would silently read everything).
const PROVIDER_ONLY_FILTERS: &[(&str, Provider)] = &[
    ("query", Provider::Google),
    ("filter", Provider::Microsoft),
    ("folder", Provider::Microsoft),
];

/// Filters a type cannot run without.
const REQUIRED_FILTERS: &[(&str, &str)] =
    &[("teams_digest", "team_id"), ("teams_digest", "channel_id")];

pub(super) async fn list(
    s: &AgentService,
    p: &Principal,
    kind: AgentKind,
) -> Result<Vec<AgentView>, Error> {
    let rows = s.inner.db.list_agents(p.user.id, kind).await?;
    Ok(rows.iter().map(view).collect())
}

pub(super) async fn create(
    s: &AgentService,
    p: &Principal,
    kind: AgentKind,
    input: AgentInput,
) -> Result<AgentView, Error> {
    let item = agent_type(&input.agent_type, kind)?;
    let name = validate_name(&input.name)?;
    let timezone = validate_timezone(input.timezone.as_deref())?;
    let schedule = match input.schedule.as_deref() {
        None => Some(item.default_schedule.to_owned()),
        Some(cron) => validate_schedule(cron, &timezone)?,
    };
    validate_filters(item, &input.filters, input.provider.as_deref())?;
    validate_output(&input.output)?;
    let prompt_template = validate_template(item, input.prompt_template.as_deref())?;
    let (provider, token) = match kind {
        AgentKind::Local => {
            reject_cloud_fields(
                input.provider.as_deref(),
                input.oauth_token_encrypted.as_deref(),
            )?;
            (None, None)
        }
        AgentKind::Cloud => {
            let provider = validate_provider(s, item, input.provider.as_deref())?;
            let token = input
                .oauth_token_encrypted
                .as_deref()
                .ok_or_else(|| Error::validation("oauth_token_encrypted", "is required"))?;
            validate_token(s, provider, token)?;
            (Some(provider), Some(token.to_owned()))
        }
    };
    let now = s.inner.clock.now_ms();
    let mut row = AgentConfigRow {
        id: Uuid::new_v4(),
        user_id: p.user.id,
        kind,
        name,
        agent_type: item.agent_type.to_owned(),
        schedule,
        timezone,
        enabled: input.enabled.unwrap_or(true),
        filters: Value::Object(input.filters),
        output: Value::Object(input.output),
        prompt_template,
        provider: provider.map(|p| p.as_str().to_owned()),
        oauth_token_sealed: token,
        status: AgentStatus::Active,
        sync_cursor: None,
        next_run_at: None,
        created_at: now,
        updated_at: now,
    };
    row.next_run_at = next_run_at(&row, now)?;
    s.inner
        .db
        .insert_agent(&row, limits(p.user.tier))
        .await
        .map_err(|e| limit_error(e, p.user.tier))?;
    Ok(view(&row))
}

pub(super) async fn update(
    s: &AgentService,
    p: &Principal,
    kind: AgentKind,
    id: Uuid,
    patch: AgentPatch,
) -> Result<AgentView, Error> {
    let mut row = s
        .inner
        .db
        .agent(p.user.id, id)
        .await?
        .filter(|r| r.kind == kind)
        .ok_or(Error::NotFound("agent"))?;
    let item = catalog::catalog_item(&row.agent_type).ok_or_else(|| {
        Error::internal(format!("stored agent type {} is unknown", row.agent_type))
    })?;
    if let Some(name) = &patch.name {
        row.name = validate_name(name)?;
    }
    if let Some(tz) = &patch.timezone {
        row.timezone = validate_timezone(Some(tz))?;
    }
    if let Some(cron) = &patch.schedule {
        row.schedule = validate_schedule(cron, &row.timezone)?;
    } else if let Some(cron) = &row.schedule {
        // A new zone must still read the stored schedule.
        Schedule::parse(cron, &row.timezone)?;
    }
    if let Some(enabled) = patch.enabled {
        row.enabled = enabled;
    }
    if let Some(filters) = patch.filters {
        validate_filters(item, &filters, row.provider.as_deref())?;
        row.filters = Value::Object(filters);
    }
    if let Some(output) = patch.output {
        validate_output(&output)?;
        row.output = Value::Object(output);
    }
    if let Some(template) = &patch.prompt_template {
        row.prompt_template = validate_template(item, Some(template))?;
    }
    if let Some(token) = &patch.oauth_token_encrypted {
        match kind {
            AgentKind::Local => reject_cloud_fields(None, Some(token))?,
            AgentKind::Cloud => {
                let provider = row
                    .provider
                    .as_deref()
                    .and_then(Provider::parse)
                    .ok_or_else(|| Error::internal("a stored cloud agent has no provider"))?;
                validate_token(s, provider, token)?;
                row.oauth_token_sealed = Some(token.clone());
                // Re-authorised: the agent runs again (and `next_run_at` comes back).
                row.status = AgentStatus::Active;
            }
        }
    }
    let now = s.inner.clock.now_ms();
    row.updated_at = now;
    row.next_run_at = next_run_at(&row, now)?;
    s.inner
        .db
        .update_agent(&row, limits(p.user.tier))
        .await
        .map_err(|e| match e {
            RepoError::NotFound => Error::NotFound("agent"),
            other => limit_error(other, p.user.tier),
        })?;
    Ok(view(&row))
}

pub(super) async fn delete(
    s: &AgentService,
    p: &Principal,
    kind: AgentKind,
    id: Uuid,
) -> Result<(), Error> {
    s.inner
        .db
        .delete_agent(p.user.id, kind, id)
        .await
        .map_err(|e| match e {
            RepoError::NotFound => Error::NotFound("agent"),
            other => other.into(),
        })
}

/// The API's view of a row: everything but the token (only whether there is one).
pub(super) fn view(row: &AgentConfigRow) -> AgentView {
    AgentView {
        id: row.id,
        kind: row.kind,
        name: row.name.clone(),
        agent_type: row.agent_type.clone(),
        schedule: row.schedule.clone(),
        timezone: row.timezone.clone(),
        enabled: row.enabled,
        filters: object(&row.filters),
        output: object(&row.output),
        prompt_template: row.prompt_template.clone(),
        provider: row.provider.clone(),
        connected: row.oauth_token_sealed.is_some(),
        status: row.status,
        next_run_at: row.next_run_at,
        created_at: row.created_at,
        updated_at: row.updated_at,
    }
}

fn object(v: &Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

/// The next slot: only an enabled, active agent with a schedule has one.
pub(super) fn next_run_at(row: &AgentConfigRow, now: Millis) -> Result<Option<Millis>, Error> {
    match (&row.schedule, row.enabled, row.status) {
        (Some(cron), true, AgentStatus::Active) => {
            Ok(Schedule::parse(cron, &row.timezone)?.next_after(now))
        }
        _ => Ok(None),
    }
}

/// The tier's limits as the repository checks them.
pub(super) fn limits(tier: Tier) -> AgentLimits {
    let n = |f| match allowance(tier, f) {
        Allowance::Limit(Some(n)) => Some(u32::try_from(n.max(0)).unwrap_or(u32::MAX)),
        Allowance::Limit(None) => None,
        Allowance::Flag(true) => None,
        Allowance::Flag(false) => Some(0),
    };
    AgentLimits {
        configured: n(Feature::Agents),
        enabled: n(Feature::BatchActive),
        providers: n(Feature::Providers),
    }
}

/// A broken limit → 403 `quota_exceeded`, naming the limit and the tier.
fn limit_error(e: RepoError, tier: Tier) -> Error {
    let what = match &e {
        RepoError::Conflict(c) if c == "agents.limit" => (Feature::Agents, "configured agents"),
        RepoError::Conflict(c) if c == "batch_active.limit" => {
            (Feature::BatchActive, "enabled agents")
        }
        RepoError::Conflict(c) if c == "providers.limit" => {
            (Feature::Providers, "connected providers")
        }
        _ => return e.into(),
    };
    let (feature, noun) = what;
    let n = match allowance(tier, feature) {
        Allowance::Limit(Some(n)) => n.to_string(),
        _ => "no more".to_owned(),
    };
    Error::Forbidden {
        code: "quota_exceeded",
        detail: format!(
            "the {} tier allows {n} {noun} ({}); nothing was saved — disable or delete one, \
             or upgrade",
            tier.as_str(),
            feature.as_str()
        ),
    }
}

fn agent_type(agent_type: &str, kind: AgentKind) -> Result<&'static CatalogItem, Error> {
    let item = catalog::catalog_item(agent_type)
        .ok_or_else(|| Error::validation("agent_type", "is not a known agent type"))?;
    if item.kind != kind {
        return Err(Error::validation(
            "agent_type",
            format!(
                "is a {} agent type, not a {} one",
                item.kind.as_str(),
                kind.as_str()
            ),
        ));
    }
    Ok(item)
}

pub(super) fn validate_name(name: &str) -> Result<String, Error> {
    let name = name.trim();
    let chars = name.chars().count();
    if chars == 0 {
        return Err(Error::validation("name", "must not be empty"));
    }
    if chars > MAX_NAME_CHARS {
        return Err(Error::validation(
            "name",
            format!("must be at most {MAX_NAME_CHARS} characters"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::validation(
            "name",
            "must not contain control characters",
        ));
    }
    Ok(name.to_owned())
}

pub(super) fn validate_timezone(tz: Option<&str>) -> Result<String, Error> {
    match tz {
        None => Ok("UTC".to_owned()),
        Some(tz) => {
            let tz = tz.trim();
            Schedule::validate_timezone(tz)?;
            Ok(tz.to_owned())
        }
    }
}

/// An empty schedule: manual runs only.
pub(super) fn validate_schedule(cron: &str, tz: &str) -> Result<Option<String>, Error> {
    let cron = cron.trim();
    if cron.is_empty() {
        return Ok(None);
    }
    Schedule::parse(cron, tz)?;
    Ok(Some(cron.to_owned()))
}

pub(super) fn validate_filters(
    item: &CatalogItem,
    filters: &Map<String, Value>,
    provider: Option<&str>,
) -> Result<(), Error> {
    let bytes = serde_json::to_string(filters)
        .map(|s| s.len())
        .unwrap_or(usize::MAX);
    if bytes > MAX_FILTERS_BYTES {
        return Err(Error::validation(
            "filters",
            format!("must be at most {MAX_FILTERS_BYTES} bytes of JSON"),
        ));
    }
    let known: Vec<&str> = item.filters.iter().map(|(k, _)| *k).collect();
    for (key, value) in filters {
        if !known.contains(&key.as_str()) {
            return Err(Error::validation(
                "filters",
                format!(
                    "has a key this agent type does not understand (it understands: {})",
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ),
            ));
        }
        let field = format!("filters.{key}");
        let Value::String(text) = value else {
            return Err(Error::validation(field, "must be a string"));
        };
        if text.chars().count() > MAX_FILTER_VALUE_CHARS {
            return Err(Error::validation(
                field,
                format!("must be at most {MAX_FILTER_VALUE_CHARS} characters"),
            ));
        }
        if text.chars().any(char::is_control) {
            return Err(Error::validation(
                field,
                "must not contain control characters",
            ));
        }
        if let (Some((_, only)), Some(provider)) = (
            PROVIDER_ONLY_FILTERS.iter().find(|(k, _)| k == key),
            provider,
        ) && item.kind == AgentKind::Cloud
            && only.as_str() != provider
        {
            return Err(Error::validation(
                field,
                format!("is understood by {} only", only.as_str()),
            ));
        }
    }
    for (_, key) in REQUIRED_FILTERS
        .iter()
        .filter(|(t, _)| *t == item.agent_type)
    {
        let present = filters
            .get(*key)
            .and_then(Value::as_str)
            .is_some_and(|v| !v.trim().is_empty());
        if !present {
            return Err(Error::validation(format!("filters.{key}"), "is required"));
        }
    }
    Ok(())
}

pub(super) fn validate_output(output: &Map<String, Value>) -> Result<(), Error> {
    let bytes = serde_json::to_string(output)
        .map(|s| s.len())
        .unwrap_or(usize::MAX);
    if bytes > MAX_OUTPUT_BYTES {
        return Err(Error::validation(
            "output",
            format!("must be at most {MAX_OUTPUT_BYTES} bytes of JSON"),
        ));
    }
    for (key, value) in output {
        if key != "device_id" {
            return Err(Error::validation("output", "understands only `device_id`"));
        }
        match value {
            Value::String(id)
                if !id.trim().is_empty()
                    && id.chars().count() <= MAX_DEVICE_ID_CHARS
                    && !id.chars().any(char::is_control) => {}
            _ => {
                return Err(Error::validation(
                    "output.device_id",
                    format!("must be a device id: a string of 1–{MAX_DEVICE_ID_CHARS} characters"),
                ));
            }
        }
    }
    Ok(())
}

pub(super) fn validate_template(
    item: &CatalogItem,
    template: Option<&str>,
) -> Result<String, Error> {
    match template {
        None => Ok(item.prompt_template.to_owned()),
        Some(t) if catalog::templates(item.agent_type).contains(&t) => Ok(t.to_owned()),
        Some(_) => Err(Error::validation(
            "prompt_template",
            format!(
                "is not a template of this agent type (one of: {})",
                catalog::templates(item.agent_type).join(", ")
            ),
        )),
    }
}

fn validate_provider(
    s: &AgentService,
    item: &CatalogItem,
    provider: Option<&str>,
) -> Result<Provider, Error> {
    let name = provider.ok_or_else(|| Error::validation("provider", "is required"))?;
    let provider = Provider::parse(name)
        .filter(|p| item.providers.contains(p))
        .ok_or_else(|| {
            let names: Vec<_> = item.providers.iter().map(|p| p.as_str()).collect();
            Error::validation(
                "provider",
                format!("must be one this agent type reads: {}", names.join(", ")),
            )
        })?;
    // Without its adapter the agent could never run: say so now (503) rather than fail
    // every run later.
    s.provider(provider)?;
    Ok(provider)
}

fn validate_token(s: &AgentService, provider: Provider, token: &str) -> Result<(), Error> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(Error::validation("oauth_token_encrypted", "is too long"));
    }
    let (sealed_for, _) = open_tokens(&s.inner.keyring, token).map_err(|_| {
        Error::validation(
            "oauth_token_encrypted",
            "is not a token this server issued (connect the provider again)",
        )
    })?;
    if sealed_for != provider {
        return Err(Error::validation(
            "oauth_token_encrypted",
            format!(
                "is a {} token, not a {} one",
                sealed_for.as_str(),
                provider.as_str()
            ),
        ));
    }
    Ok(())
}

fn reject_cloud_fields(provider: Option<&str>, token: Option<&str>) -> Result<(), Error> {
    if provider.is_some() {
        return Err(Error::validation("provider", "is only for cloud agents"));
    }
    if token.is_some() {
        return Err(Error::validation(
            "oauth_token_encrypted",
            "is only for cloud agents",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_follow_the_plan_matrix() {
        let l = |configured, enabled, providers| AgentLimits {
            configured,
            enabled,
            providers,
        };
        assert_eq!(limits(Tier::Free), l(Some(3), Some(2), Some(1)));
        assert_eq!(limits(Tier::Pro), l(None, Some(10), None));
        assert_eq!(limits(Tier::Power), l(None, None, None));
        assert_eq!(limits(Tier::Team), l(None, None, None));
    }

    #[test]
    fn a_broken_limit_names_the_limit_and_the_tier_and_other_conflicts_pass_through() {
        let e = limit_error(RepoError::Conflict("providers.limit".into()), Tier::Free);
        match e {
            Error::Forbidden { code, detail } => {
                assert_eq!(code, "quota_exceeded");
                assert!(detail.contains("free") && detail.contains("1 connected providers"));
            }
            other => panic!("{other:?}"),
        }
        let e = limit_error(RepoError::Conflict("agents_pkey".into()), Tier::Free);
        assert!(matches!(e, Error::Conflict(_)), "{e:?}");
    }
}
