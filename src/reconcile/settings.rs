//! `[deploy]` settings: how deployments are verified and when they skip their window.

use std::time::Duration;

/// `[deploy]`: how deployments are verified and when they skip their window.
#[derive(Debug, Clone, PartialEq)]
pub struct DeploySettings {
    /// How long after the hook the endpoint has to serve the new certificate.
    pub verify_timeout: Duration,
    /// Time between verification probes.
    pub verify_interval: Duration,
    /// A waiting deployment runs at once, window or not, when the endpoint's certificate
    /// expires within this many days.
    pub emergency_days: f64,
}

impl Default for DeploySettings {
    fn default() -> Self {
        Self {
            verify_timeout: Duration::from_secs(120),
            verify_interval: Duration::from_secs(2),
            emergency_days: 3.0,
        }
    }
}
