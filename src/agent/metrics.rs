//! The agents' series, built at scrape time from the store's agents table (so a removed
//! agent leaves no stale series): `tlsward_agent_last_seen_timestamp_seconds{agent}`,
//! `tlsward_agent_identity_not_after_timestamp_seconds{agent}` and
//! `tlsward_agent_info{agent,version}`. Agent names are config names (checked when a token
//! is made); the version comes from the agent, so it is escaped and capped.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::escape::LabelValue;
use crate::store::{AgentRow, Store};

/// The agents' collector over `store`.
#[derive(Debug)]
pub struct AgentCollector {
    store: Arc<Store>,
}

impl AgentCollector {
    /// Registers the collector with `reg` (the `tlsward` sub-registry).
    pub fn register(reg: &mut Registry, store: Arc<Store>) {
        reg.register_collector(Box::new(Self { store }));
    }
}

/// Writes one gauge family of `value` per agent that has one.
fn gauge(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    rows: &[AgentRow],
    value: impl Fn(&AgentRow) -> Option<i64>,
) -> Result<(), std::fmt::Error> {
    let samples: Vec<(&str, i64)> = rows
        .iter()
        .filter_map(|r| value(r).map(|v| (r.name.as_str(), v)))
        .collect();
    if samples.is_empty() {
        return Ok(());
    }
    let mut fam = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (agent, v) in samples {
        ConstGauge::new(v as f64)
            .encode(fam.encode_family(&[("agent", LabelValue::from(agent))])?)?;
    }
    Ok(())
}

impl Collector for AgentCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let rows: Vec<AgentRow> = match self.store.agents() {
            Ok(rows) => rows
                .into_iter()
                .filter(|r| r.revoked_at.is_none())
                .collect(),
            // A store that cannot be read exports nothing rather than failing the scrape.
            Err(_) => return Ok(()),
        };
        gauge(
            &mut enc,
            "agent_last_seen_timestamp_seconds",
            "When the agent last made an authenticated request to the agent API.",
            &rows,
            |r| r.last_seen,
        )?;
        gauge(
            &mut enc,
            "agent_identity_not_after_timestamp_seconds",
            "When the agent's client certificate expires (it renews at two thirds of its life).",
            &rows,
            |r| r.identity_not_after,
        )?;
        let info: Vec<&AgentRow> = rows.iter().filter(|r| r.enrolled_at.is_some()).collect();
        if !info.is_empty() {
            let mut fam = enc.encode_descriptor(
                "agent",
                "An enrolled agent and the tlsward version it reported.",
                None,
                MetricType::Info,
            )?;
            for r in info {
                let version = r.version.as_deref().unwrap_or("");
                fam.encode_info(&[
                    ("agent", LabelValue::from(r.name.as_str())),
                    ("version", LabelValue::peer(version)),
                ])?;
            }
        }
        Ok(())
    }
}
